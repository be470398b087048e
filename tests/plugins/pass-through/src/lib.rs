//! `pass-through`: delivers every event unchanged; measures the runtime's per-event floor.

use hookwasm_plugin_sdk::prelude::*;

pub struct PassThrough;

impl Plugin for PassThrough {
    fn transform(_event: Event) -> Result<Action> {
        Ok(Action::Pass)
    }
}

export_plugin!(PassThrough);
