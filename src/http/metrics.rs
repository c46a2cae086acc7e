//! `GET /metrics` (admin listener): the event metrics of [`crate::metrics`]
//! plus what the services' state says at this instant, read here because
//! only the http layer holds every service. Also the counting of issued and
//! refreshed token pairs by keyset and algorithm, from the access token's
//! header (the kid names the key, the key its keyset).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Unit;

use super::AppState;
use crate::keys::KeyState;
use crate::metrics::process::ProcessFigures;
use crate::metrics::{Scrape, TokenLabels, CONTENT_TYPE};

const STATES: [KeyState; 7] = [
    KeyState::Planned,
    KeyState::Pending,
    KeyState::Active,
    KeyState::Retiring,
    KeyState::Retired,
    KeyState::Destroyed,
    KeyState::Revoked,
];

type Labels = Vec<(&'static str, String)>;

/// Unauthenticated, like most metrics endpoints; it lives on the admin
/// listener, which stays private.
pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let mut s = Scrape::default();
    services(&state, &mut s);
    keysets(&state, &mut s);
    migration(&state, &mut s);
    backends(&state, &mut s);
    leader(&state, &mut s);
    process(&mut s);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render(&s))
}

fn services(state: &AppState, s: &mut Scrape) {
    let (hits, misses) = state.tokens.verify_cache_counts();
    let hs256 = state.tokens.migration().map_or(0, |m| m.verifications());
    let counters = [
        ("kmsd_api_key_store_lookups", "API key lookups that reached the store.", state.api_keys.store_lookups()),
        ("kmsd_hs256_verifications", "Legacy HS256 tokens verified (migration).", hs256),
        ("kmsd_token_verify_cache_hits", "Token verifications of a token already checked.", hits),
        ("kmsd_token_verify_cache_misses", "Token verifications that checked a signature.", misses),
        (
            "kmsd_tokens_unknown_jti",
            "Validly signed tokens refused because kmsd never issued their jti.",
            state.tokens.unknown_jtis(),
        ),
        ("kmsd_rotation_failed_ticks", "Rotation reconcile ticks that failed.", state.rotation.failures()),
        ("kmsd_store_reads", "Store read transactions.", state.store.reads()),
        ("kmsd_store_writes", "Store write transactions (a group commit counts once).", state.store.writes()),
    ];
    for (name, help, value) in counters {
        s.counter(name, help, value);
    }
}

fn keysets(state: &AppState, s: &mut Scrape) {
    let now = state.clock.now();
    let records = state.ring.records();
    let paused = if state.rotation.is_paused() { 1.0 } else { 0.0 };
    let (mut active_since, mut next, mut has_active, mut by_state, mut paused_by) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ks in state.ring.keysets() {
        let name = || -> Labels { vec![("keyset", ks.name.to_string())] };
        let active = state.ring.active(&ks.name, now);
        has_active.push((name(), if active.is_some() { 1.0 } else { 0.0 }));
        if let Some(a) = active {
            active_since.push((name(), a.schedule.activated_at.unix() as f64));
        }
        if let Some(at) = state.rotation.next_activation(&ks.name) {
            next.push((name(), at.unix() as f64));
        }
        paused_by.push((name(), paused));
        for st in STATES {
            let n = records.iter().filter(|r| r.keyset == ks.name && r.state_at(now) == st).count();
            by_state.push((vec![("keyset", ks.name.to_string()), ("state", st.as_str().to_owned())], n as f64));
        }
    }
    s.gauges("kmsd_keyset_has_active_key", "1 if the keyset has a key that signs now, else 0.", has_active);
    s.gauges(
        "kmsd_keyset_active_key_activated_timestamp_seconds",
        "When the keyset's signing key became active (unix seconds).",
        active_since,
    );
    s.gauges(
        "kmsd_keyset_next_rotation_timestamp_seconds",
        "When the keyset's signer next changes: a waiting key's activation or the next scheduled one (unix seconds).",
        next,
    );
    s.gauges("kmsd_keyset_keys", "Key versions of the keyset, by state.", by_state);
    s.gauges("kmsd_keyset_rotation_paused", "1 while scheduled rotation is paused.", paused_by);
}

fn migration(state: &AppState, s: &mut Scrape) {
    let Some(m) = state.tokens.migration() else { return };
    let current = m.state();
    let phases = ["hs256", "asymmetric", "sunset"]
        .map(|p| (vec![("phase", p.to_owned())], if current.phase.as_str() == p { 1.0 } else { 0.0 }));
    s.gauges("kmsd_migration_phase", "The HS256 cut-over's phase (1 for the current one).", phases);
    if let Some(at) = current.sunset_at {
        s.gauge(
            "kmsd_migration_sunset_timestamp_seconds",
            "When HS256 stops verifying (unix seconds).",
            at.unix() as f64,
        );
    }
}

/// `kmsd_leader`: 1 on the replica that runs the background work (always
/// on redb), labelled with the replica's name on PostgreSQL.
fn leader(state: &AppState, s: &mut Scrape) {
    let leads = if state.leadership.leads() { 1.0 } else { 0.0 };
    let help = "1 while this replica leads the background work (rotation, GC, sunset, orphan cleanup).";
    match state.leadership.replica() {
        Some(replica) => s.gauges("kmsd_leader", help, [(vec![("replica", replica.to_owned())], leads)]),
        None => s.gauge("kmsd_leader", help, leads),
    }
}

fn backends(state: &AppState, s: &mut Scrape) {
    let mut budget: Vec<(Labels, f64)> = Vec::new();
    for b in state.ring.backends().iter() {
        let backend = b.backend().kind().as_str();
        for (class, left) in b.backend().budget_remaining() {
            budget.push((vec![("backend", backend.to_owned()), ("class", class.to_owned())], left));
        }
    }
    if !budget.is_empty() {
        s.gauges(
            "kmsd_backend_sign_budget_remaining",
            "Sign calls kmsd's own budget allows right now, by backend and quota class.",
            budget,
        );
    }
}

fn process(s: &mut Scrape) {
    let f = ProcessFigures::read();
    let gauges = [
        ("process_open_fds", "Open file descriptors.", f.open_fds),
        ("process_max_fds", "The limit of open file descriptors.", f.max_fds),
        ("process_resident_memory_bytes", "Resident memory in bytes.", f.resident_bytes),
        ("process_start_time_seconds", "Start time of the process (unix seconds).", f.start_time_seconds),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            s.gauge(name, help, v);
        }
    }
    if let Some(cpu) = f.cpu_seconds {
        s.counter_f64("process_cpu", "User and system CPU time.", Some(Unit::Seconds), cpu);
    }
}

/// Counts an issued or refreshed pair under its access token's keyset and
/// algorithm (HS256 tokens of the migration count as keyset `hs256-legacy`).
pub fn count_pair(state: &AppState, family: &Family<TokenLabels, Counter>, access_token: &str) {
    let header = access_token
        .split('.')
        .next()
        .and_then(|h| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok());
    let kid = header.as_ref().and_then(|h| h["kid"].as_str());
    let labels = match kid.and_then(|k| state.ring.record(k)) {
        Some(r) => TokenLabels { keyset: r.keyset.to_string(), algorithm: r.algorithm().as_str() },
        None => TokenLabels { keyset: "hs256-legacy".into(), algorithm: "HS256" },
    };
    family.get_or_create(&labels).inc();
}
