//! The host's built-in round-robin, used when a plugin fails, is quarantined, or none is selected.
//! It needs no plugin, cannot fail, and obeys the host's rules ([`Request::fits`]).

use std::collections::BTreeMap;

use spear_plugin_api::{Decision, Request, Target};

/// Round-robin over the host's view, in target-id order.
#[derive(Debug, Default)]
pub(crate) struct Fallback {
    cursor: Option<u64>,
}

impl Fallback {
    /// Decide `requests` over `view`, claiming resources in the view as it goes.
    pub(crate) fn place(
        &mut self,
        view: &mut BTreeMap<u64, Target>,
        requests: &[Request],
    ) -> Vec<Decision> {
        requests
            .iter()
            .map(|r| {
                let start = self.cursor.map_or(0, |c| c.saturating_add(1));
                let chosen = view
                    .range(start..)
                    .chain(view.range(..start))
                    .find(|(_, t)| r.fits(t))
                    .map(|(id, _)| *id);
                match chosen {
                    Some(id) => {
                        self.cursor = Some(id);
                        if let Some(t) = view.get_mut(&id) {
                            t.claim(&r.needs);
                        }
                        Decision::Assign(id)
                    }
                    None => Decision::Reject("no eligible target".into()),
                }
            })
            .collect()
    }
}
