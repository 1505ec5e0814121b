//! SPEAR's `spearlet.ObjectService` on a real Spearlet's gRPC listener, called as SPEAR's clients
//! call it: puts, overwrites, references, pins, deletes and pages answer with SPEAR's fields and
//! messages; every bound answers `success: false` (or the codec's `OUT_OF_RANGE`) and the
//! Spearlet keeps serving; concurrent reference changes lose no update.

use std::collections::HashMap;

use spear_proto::spearlet as pb;
use spear_proto::spearlet::object_service_client::ObjectServiceClient;
use tonic::transport::Channel;

use crate::common::Cluster;

async fn client(addr: std::net::SocketAddr) -> ObjectServiceClient<Channel> {
    ObjectServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
}

fn put(key: &str, value: &[u8], overwrite: bool) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        key: key.into(),
        value: value.to_vec().into(),
        metadata: HashMap::from([("kind".to_owned(), "test".to_owned())]),
        overwrite,
    }
}

#[tokio::test]
async fn spear_s_object_service_keeps_counts_pins_and_pages_as_spear_s() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    let config = cluster
        .spearlet_config(
            "objects",
            "[spearlet.objects]\nmax_total_mb = 1\nmax_count = 50\n",
        )
        .replace(
            "[spearlet.storage]\n",
            "[spearlet.storage]\nmax_object_size = 262144\n",
        );
    let node = cluster.spearlet_from("objects", &sms, &config);
    let mut c = client(node.grpc).await;

    // Put, and the same key again without and with overwrite.
    let first = c
        .put_object(put("a/1", b"one", false))
        .await
        .unwrap()
        .into_inner();
    assert!(first.success, "{first:?}");
    assert_eq!(first.message, "Object stored successfully");
    let m = first.object_meta.unwrap();
    assert_eq!((m.size, m.ref_count, m.pinned), (3, 1, false));
    let again = c
        .put_object(put("a/1", b"uno", false))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.success);
    assert_eq!(
        again.message,
        "Object already exists and overwrite is false"
    );
    assert_eq!(again.object_meta.unwrap().size, 3, "the kept object's meta");
    c.add_object_ref(pb::AddObjectRefRequest {
        key: "a/1".into(),
        count: 2,
    })
    .await
    .unwrap();
    c.pin_object(pb::PinObjectRequest { key: "a/1".into() })
        .await
        .unwrap();
    let over = c
        .put_object(put("a/1", b"uno!", true))
        .await
        .unwrap()
        .into_inner();
    let m = over.object_meta.unwrap();
    assert_eq!(
        (m.size, m.ref_count, m.pinned),
        (4, 3, true),
        "count and pin kept"
    );
    let got = c
        .get_object(pb::GetObjectRequest {
            key: "a/1".into(),
            include_value: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(
        &got.object.unwrap().value[..],
        b"uno!",
        "values always come back, as SPEAR's"
    );

    // References: a pinned object stays at zero; unpinned, the last reference removes it.
    let down = c
        .remove_object_ref(pb::RemoveObjectRefRequest {
            key: "a/1".into(),
            count: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((down.new_ref_count, down.deleted), (0, false), "{down:?}");
    let refused = c
        .delete_object(pb::DeleteObjectRequest {
            key: "a/1".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused.message,
        "Cannot delete pinned object without force flag"
    );
    let unpin = c
        .unpin_object(pb::UnpinObjectRequest { key: "a/1".into() })
        .await
        .unwrap();
    assert!(unpin.into_inner().success);
    let twice = c
        .unpin_object(pb::UnpinObjectRequest { key: "a/1".into() })
        .await
        .unwrap();
    assert_eq!(twice.into_inner().message, "Object is not pinned");
    c.add_object_ref(pb::AddObjectRefRequest {
        key: "a/1".into(),
        count: 0,
    })
    .await
    .unwrap();
    let gone = c
        .remove_object_ref(pb::RemoveObjectRefRequest {
            key: "a/1".into(),
            count: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.message, "Object deleted due to zero references");
    assert!(gone.deleted);
    let missing = c
        .get_object(pb::GetObjectRequest {
            key: "a/1".into(),
            include_value: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (missing.found, missing.message.as_str()),
        (false, "Object not found")
    );

    // Pages: SPEAR's index cursor, a prefix, and an index past the end answered empty.
    for i in 0..25 {
        let r = c
            .put_object(put(&format!("p/{i:02}"), b"x", false))
            .await
            .unwrap();
        assert!(r.into_inner().success);
    }
    c.put_object(put("q/other", b"y", false)).await.unwrap();
    let mut keys = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = c
            .list_objects(pb::ListObjectsRequest {
                prefix: "p/".into(),
                limit: 10,
                start_after: cursor.clone(),
                include_values: false,
            })
            .await
            .unwrap()
            .into_inner();
        keys.extend(page.objects.iter().map(|o| o.key.clone()));
        if !page.has_more {
            assert_eq!(page.next_start_after, "");
            break;
        }
        cursor = page.next_start_after;
    }
    let want: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
    assert_eq!(keys, want);
    let past = c
        .list_objects(pb::ListObjectsRequest {
            prefix: String::new(),
            limit: 0,
            start_after: "1000".into(),
            include_values: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(past.objects.is_empty() && !past.has_more);

    // Bounds: an empty key, one object over max_object_size (the codec refuses a message past
    // it), the total, the count; the Spearlet answers all and keeps serving.
    let empty = c
        .put_object(put("", b"x", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.message, "Object key cannot be empty");
    let big = c
        .put_object(put("big", &vec![1u8; 200_000], false))
        .await
        .unwrap()
        .into_inner();
    assert!(big.success, "{big:?}");
    let bigger = c
        .put_object(put("bigger", &vec![1u8; 262_145], false))
        .await
        .unwrap()
        .into_inner();
    assert!(
        bigger.message.contains("exceeds maximum size 262144"),
        "{bigger:?}"
    );
    let huge = c
        .put_object(put("huge", &vec![1u8; 2_000_000], false))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::OutOfRange, "{huge:?}");
    let mut total_refused = None;
    for i in 0..10 {
        let r = c
            .put_object(put(&format!("fill/{i}"), &vec![2u8; 200_000], false))
            .await
            .unwrap()
            .into_inner();
        if !r.success {
            total_refused = Some(r.message);
            break;
        }
    }
    assert!(
        total_refused
            .unwrap_or_default()
            .contains("spearlet.objects.max_total_mb"),
        "a megabyte of values is the limit"
    );
    let mut count_refused = None;
    for i in 0..60 {
        let r = c
            .put_object(put(&format!("n/{i}"), b"", false))
            .await
            .unwrap()
            .into_inner();
        if !r.success {
            count_refused = Some(r.message);
            break;
        }
    }
    assert!(
        count_refused
            .unwrap_or_default()
            .contains("spearlet.objects.max_count")
    );
    let status = node.get("/api/v1/status").await;
    assert_eq!(status["node_uuid"], node.node.as_str());
}

#[tokio::test]
async fn concurrent_reference_changes_lose_no_update() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    let node = cluster.spearlet("refs", &sms, "");
    let mut c = client(node.grpc).await;
    c.put_object(put("shared", b"v", false)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let r = c
                    .add_object_ref(pb::AddObjectRefRequest {
                        key: "shared".into(),
                        count: 1,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(r.success);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = c
        .get_object(pb::GetObjectRequest {
            key: "shared".into(),
            include_value: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.object.unwrap().ref_count, 1 + 8 * 50);
}

#[tokio::test]
async fn keys_and_metadata_count_against_the_total_as_values_do() {
    let cluster = Cluster::new();
    let sms = cluster.sms();
    let config = cluster.spearlet_config("meta", "[spearlet.objects]\nmax_total_mb = 1\n");
    let node = cluster.spearlet_from("meta", &sms, &config);
    let mut c = client(node.grpc).await;
    // 64 entries of 1 KiB keys and values: 128 KiB of metadata around a one-byte value.
    let metadata: HashMap<String, String> = (0..64)
        .map(|i| (format!("{i:0>1024}"), "v".repeat(1024)))
        .collect();
    let mut stored = 0;
    for i in 0..20 {
        let r = c
            .put_object(pb::PutObjectRequest {
                key: format!("m/{i}"),
                value: vec![1u8].into(),
                metadata: metadata.clone(),
                overwrite: false,
            })
            .await
            .unwrap()
            .into_inner();
        if !r.success {
            assert!(r.message.contains("spearlet.objects.max_total_mb"), "{r:?}");
            break;
        }
        stored += 1;
    }
    assert_eq!(stored, 7, "a megabyte holds seven 128 KiB objects");
    // Removing one makes room for one.
    let gone = c
        .delete_object(pb::DeleteObjectRequest {
            key: "m/0".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.deleted);
    let again = c
        .put_object(pb::PutObjectRequest {
            key: "m/again".into(),
            value: vec![1u8].into(),
            metadata,
            overwrite: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.success, "{again:?}");
    // The page budget counts metadata: 4 MiB is far above these seven, so one page holds all.
    let page = c
        .list_objects(pb::ListObjectsRequest {
            prefix: "m/".into(),
            limit: 0,
            start_after: String::new(),
            include_values: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.objects.len(), 7);
    assert!(!page.has_more);
}
