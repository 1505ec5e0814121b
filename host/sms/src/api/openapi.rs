//! Completes the OpenAPI document with the answers the edge can give on any route, so that
//! generated clients (and schemathesis) expect what the server really sends: `503` everywhere
//! (storage failing, too many connections), `404` on routes with a path parameter, and `400`,
//! `408` and `413` on routes that take a body or a query.

use utoipa::Modify;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// The [`Modify`] that adds the edge's answers.
#[derive(Debug)]
pub struct EdgeResponses;

fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn complete(path: &str, op: &mut Operation) {
    let answers = &mut op.responses.responses;
    let mut add = |code: &str, description: &str| {
        answers
            .entry(code.to_owned())
            .or_insert_with(|| error(description));
    };
    add(
        "503",
        "unavailable: storage writes fail, or too many connections",
    );
    if path.contains('{') {
        add("404", "not found");
    }
    let takes_input =
        op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if takes_input {
        add("400", "invalid argument, naming the field");
    }
    if op.request_body.is_some() {
        add(
            "408",
            "the body did not arrive within http.body_timeout_secs",
        );
        add("413", "the body is over its limit");
    }
}

impl Modify for EdgeResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                complete(path, op);
            }
        }
    }
}
