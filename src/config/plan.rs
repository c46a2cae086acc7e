//! `kmsd plan`: the rotation timeline a configuration implies, rendered as
//! text without a store.

use super::duration::render;
use super::Config;
use crate::clock::Timestamp;

/// `kmsd plan`: the timeline the configuration implies, assuming each keyset's
/// current key was activated at `now` (no store needed).
pub fn offline_plan(config: &Config, now: Timestamp, rotations: usize) -> String {
    let p = &config.policy;
    let r = &p.rotation;
    let mut out = format!(
        "policy: publish_lead {} | overlap {} | destroy_delay {} | jwks max-age cap {} | access ttl max {} | refresh ttl max {}\n",
        render(r.publish_lead),
        render(r.overlap),
        render(r.destroy_delay),
        render(p.jwks.max_age_cap),
        render(p.tokens.access_ttl_max),
        render(p.tokens.refresh_ttl_max),
    );
    for ks in &config.keysets {
        out.push_str(&format!("\nkeyset {} ({}, {}):\n", ks.name, ks.spec.as_str(), ks.backend.as_str()));
        let Some(schedule) = &ks.schedule else {
            out.push_str("  no rotation schedule: the key signs until rotated by hand\n");
            continue;
        };
        out.push_str(&format!("  schedule {:?}\n", schedule.as_str()));
        let mut activated = now;
        for n in 1..=rotations {
            let Some(due) = schedule.next_after(activated) else { break };
            let (publish, activate) = crate::rotation::plan::rotation_instants(due, now, r.publish_lead);
            let removed = activate.plus(r.overlap);
            out.push_str(&format!(
                "  rotation {n}: publish {publish} -> signs {activate}; previous key leaves JWKS {removed}, destroyed {}\n",
                removed.plus(r.destroy_delay)
            ));
            activated = activate;
        }
    }
    out
}
