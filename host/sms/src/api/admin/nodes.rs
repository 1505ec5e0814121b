//! The web admin's node routes (SPEAR's `/admin/api/nodes…`): a searchable, sortable list, one
//! node with its resource figures, and a stream of snapshots (`event: snapshot`: the stats cards'
//! counts) sent when nodes change (a burst within 250 ms is one) and every five seconds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{FutureExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::query::{ListQuery, matches};
use super::stats::{Stats, StatsCache};
use crate::api::body::{ApiPath, ApiQuery};
use crate::api::nodes::NodeView;
use crate::api::rest::AppState;
use crate::error::{Result, SmsError};
use crate::model::Node;
use crate::resources::NodeResource;

/// How often the stream sends a snapshot when nothing changes (SPEAR's period).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// Fewest milliseconds between two snapshots sent for changes (a burst of node events is one).
const COALESCE: Duration = Duration::from_millis(250);

/// A node in the admin's list: the API's node and SPEAR's `name` (its `metadata.name`).
#[derive(Debug, Serialize)]
pub struct AdminNode {
    /// `metadata.name`, or empty.
    pub name: String,
    /// The node as `GET /api/v1/nodes` shows it.
    #[serde(flatten)]
    pub node: NodeView,
}

impl From<Node> for AdminNode {
    fn from(node: Node) -> Self {
        Self {
            name: node.metadata.get("name").cloned().unwrap_or_default(),
            node: node.into(),
        }
    }
}

/// `{nodes, total_count}`.
#[derive(Debug, Serialize)]
pub struct AdminNodes {
    /// The page.
    pub nodes: Vec<AdminNode>,
    /// How many nodes the search matched.
    pub total_count: usize,
}

pub(super) async fn list(
    State(sms): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AdminNodes>> {
    let needle = query.needle()?;
    let sort = query.sort(&["last_heartbeat", "registered_at", "uuid", "status"])?;
    let mut nodes: Vec<Node> = sms
        .nodes(query.status.as_deref().filter(|s| !s.is_empty()))
        .await?
        .into_iter()
        .filter(|n| needle.as_deref().is_none_or(|q| searched(n, q)))
        .collect();
    if let Some(sort) = sort {
        nodes.sort_by(|a, b| {
            let order = match sort.field.as_str() {
                "last_heartbeat" => a.last_heartbeat_ms.cmp(&b.last_heartbeat_ms),
                "registered_at" => a.registered_at_ms.cmp(&b.registered_at_ms),
                "status" => a.status.as_str().cmp(b.status.as_str()),
                _ => a.uuid.cmp(&b.uuid),
            };
            if sort.desc { order.reverse() } else { order }
        });
    }
    let (page, total_count) = query.page(nodes)?;
    Ok(Json(AdminNodes {
        nodes: page.into_iter().map(AdminNode::from).collect(),
        total_count,
    }))
}

/// Whether the search `q` (lowercase) finds `node`: its uuid, address, metadata keys and values.
fn searched(node: &Node, q: &str) -> bool {
    matches(
        q,
        [node.uuid.as_str(), node.ip_address.as_str()]
            .into_iter()
            .chain(
                node.metadata
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
            ),
    )
}

/// `{found, node, resource}` (always 200, as SPEAR's).
#[derive(Debug, Serialize)]
pub struct AdminNodeDetail {
    /// Whether the node is known.
    pub found: bool,
    /// The node.
    pub node: Option<AdminNode>,
    /// Its last resource figures, when it sent any.
    pub resource: Option<NodeResource>,
}

pub(super) async fn detail(
    State(sms): State<AppState>,
    ApiPath(uuid): ApiPath<String>,
) -> Result<Json<AdminNodeDetail>> {
    match sms.node(&uuid).await {
        Ok(node) => Ok(Json(AdminNodeDetail {
            found: true,
            resource: node.resource.clone(),
            node: Some(node.into()),
        })),
        Err(SmsError::NotFound { .. }) => Ok(Json(AdminNodeDetail {
            found: false,
            node: None,
            resource: None,
        })),
        Err(e) => Err(e),
    }
}

/// `?once=true`: one snapshot, then the stream ends.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Send one snapshot and end.
    pub once: Option<bool>,
}

/// One snapshot: SPEAR's `{type: "snapshot", count}` and the stats.
#[derive(Debug, Serialize)]
struct Snapshot {
    r#type: &'static str,
    count: usize,
    #[serde(flatten)]
    stats: Stats,
}

async fn snapshot(sms: &AppState, cache: &StatsCache) -> SseEvent {
    match cache.get(sms).await {
        Ok(stats) => SseEvent::default().event("snapshot").data(
            serde_json::to_string(&Snapshot {
                r#type: "snapshot",
                count: stats.total_count,
                stats,
            })
            .unwrap_or_default(),
        ),
        Err(e) => SseEvent::default()
            .event("error")
            .data(serde_json::json!({ "message": e.to_string() }).to_string()),
    }
}

pub(super) async fn stream(
    State(sms): State<AppState>,
    Extension(cache): Extension<Arc<StatsCache>>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>> {
    let once = q.once.unwrap_or(false);
    let after = sms.events().settled();
    let out = async_stream::stream! {
        yield Ok(snapshot(&sms, &cache).await);
        if once {
            return;
        }
        let mut events = Box::pin(sms.events().subscribe(after));
        loop {
            // A node event, or the period: either way the next snapshot.
            let changed = tokio::time::timeout(SNAPSHOT_EVERY, async {
                loop {
                    match events.next().await {
                        Some(Ok(e)) if e.kind.starts_with("node.") => return true,
                        Some(Ok(_)) => {}
                        // The log ended or fell behind: snapshots go on by the clock.
                        _ => return false,
                    }
                }
            })
            .await;
            if changed == Ok(false) {
                tokio::time::sleep(SNAPSHOT_EVERY).await;
            } else if changed.is_ok() {
                // What came meanwhile is in the snapshot to be sent: one for the burst.
                tokio::time::sleep(COALESCE).await;
                while let Some(Some(_)) = events.next().now_or_never() {}
            }
            yield Ok(snapshot(&sms, &cache).await);
        }
    };
    Sse::new(out).keep_alive(KeepAlive::default())
}
