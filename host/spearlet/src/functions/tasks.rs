//! Tasks' definitions as SMS has them, fetched on an invocation and kept for
//! `spearlet.functions.task_ttl_ms` (so that an update or an unregistration reaches the node
//! within that time). At most [`MAX_TASKS`] are kept; past it the oldest fetched goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spear_proto::v1;

use crate::sms::SmsLink;

use super::InvokeError;

/// Most task definitions kept.
pub const MAX_TASKS: usize = 4096;

/// Task definitions by id.
#[derive(Debug)]
pub struct Tasks {
    sms: SmsLink,
    ttl: Duration,
    kept: Mutex<HashMap<String, (Instant, v1::Task)>>,
}

impl Tasks {
    /// Definitions fetched through `sms`, each used for `ttl`.
    pub fn new(sms: SmsLink, ttl: Duration) -> Self {
        Self {
            sms,
            ttl,
            kept: Mutex::default(),
        }
    }

    /// Task `id`: kept, or fetched from SMS.
    pub async fn get(&self, id: &str) -> Result<v1::Task, InvokeError> {
        if let Some((at, task)) = self.lock().get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(task.clone());
        }
        let answer = self
            .sms
            .tasks()
            .get_task(v1::TaskRef {
                task_id: id.to_owned(),
            })
            .await;
        let task = match answer {
            Ok(t) => t.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                self.lock().remove(id);
                return Err(InvokeError::NotFound(format!("no task {id} at SMS")));
            }
            Err(status) => {
                self.sms.follow(&status);
                return Err(InvokeError::Unavailable(format!(
                    "cannot ask SMS at {} for task {id}: {}",
                    self.sms.addr(),
                    status.message()
                )));
            }
        };
        let mut kept = self.lock();
        if kept.len() >= MAX_TASKS
            && !kept.contains_key(id)
            && let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            kept.remove(&oldest);
        }
        kept.insert(id.to_owned(), (Instant::now(), task.clone()));
        Ok(task)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, v1::Task)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}
