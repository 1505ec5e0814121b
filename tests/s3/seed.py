"""Seed a moto server for the S3 tests, through the S3 and IAM APIs (boto3, from moto's venv).

    seed.py <endpoint> <bucket> <key>=<file> ...

Makes an IAM user with a policy allowing everything and an access key (moto started with
INITIAL_NO_AUTH_ACTION_COUNT=3 checks signatures from the fourth request on), then the bucket and
the objects, each signed with that key. Prints {"key_id": ..., "secret": ...} as JSON.
"""
import json
import sys

import boto3
from botocore.config import Config

endpoint, bucket, *objects = sys.argv[1:]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="spear")
key = iam.create_access_key(UserName="spear")["AccessKey"]
iam.put_user_policy(UserName="spear", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
s3.create_bucket(Bucket=bucket)
for spec in objects:
    name, path = spec.split("=", 1)
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=name, Body=f.read())
print(json.dumps({"key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
