use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::keys::{BackendKind, KeySpec, KeysetName, PublicKey};

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix(s)
}

fn policy() -> RotationPolicy {
    RotationPolicy {
        publish_lead: Duration::from_secs(10),
        overlap: Duration::from_secs(30),
        destroy_delay: Duration::from_secs(100),
        margin: Duration::ZERO,
        unsafe_short_publish_lead: false,
    }
}

fn key(n: u32, schedule: Schedule) -> KeyRecord {
    let mut x = [0u8; 32];
    x[..4].copy_from_slice(&n.to_be_bytes());
    let public = PublicKey::ed25519(&x).unwrap();
    KeyRecord {
        kid: public.thumbprint(),
        keyset: KeysetName::parse("edge").unwrap(),
        spec: KeySpec::Ed25519,
        backend: BackendKind::Vault,
        handle: KeyHandle::Vault { sealed: vec![1] },
        public,
        created_at: schedule.published_at,
        schedule,
        revoked_at: None,
    }
}

fn every(secs: u32) -> CronSchedule {
    CronSchedule::parse(&format!("*/{secs} * * * * *")).unwrap()
}

fn refs(v: &[KeyRecord]) -> Vec<&KeyRecord> {
    v.iter().collect()
}

#[test]
fn plan_table() {
    let p = policy();
    let cron = every(60); // due at every minute boundary
    let a = key(1, Schedule::immediate(t(0)));
    let mut retiring = retire(&a, t(60), &p);
    let b = key(2, successor(t(50), t(60)));
    let mut revoked = key(3, Schedule::immediate(t(0)));
    revoked.revoked_at = Some(t(5));
    type Case<'a> = (&'a str, Vec<KeyRecord>, i64, bool, Vec<Action>);
    let cases: Vec<Case> = vec![
        ("fresh start", vec![], 0, false, vec![Action::Initial]),
        ("steady, not yet due", vec![a.clone()], 40, false, vec![]),
        ("publish lead reached", vec![a.clone()], 50, false, vec![Action::Successor { activate_at: t(60) }]),
        ("mid-rotation: successor waits", vec![retiring.clone(), b.clone()], 55, false, vec![]),
        ("after a long outage", vec![a.clone()], 1000, false, vec![Action::Successor { activate_at: t(1010) }]),
        ("paused", vec![a.clone()], 1000, true, vec![]),
        ("after a revoke of the only key", vec![revoked.clone()], 10, false, vec![Action::Initial]),
        (
            "nothing active but a successor waits",
            vec![b.clone()],
            55,
            false,
            vec![Action::Promote { kid: b.kid.clone() }],
        ),
    ];
    for (name, ring, now, paused, want) in cases {
        assert_eq!(plan(t(now), &refs(&ring), Some(&cron), &p, paused), want, "{name}");
    }
    // Material is destroyed once destroy_at passes, once.
    retiring.schedule.destroy_at = Some(t(190));
    assert_eq!(
        plan(t(200), &refs(&[retiring.clone(), b.clone()]), None, &p, false),
        vec![Action::Destroy { kid: retiring.kid.clone() }]
    );
    retiring.handle = KeyHandle::Destroyed;
    assert_eq!(plan(t(200), &refs(&[retiring, b]), None, &p, false), vec![]);
}

#[test]
fn revoking_a_waiting_successor_cancels_the_retirement_of_the_active_key() {
    let p = policy();
    let a = retire(&key(1, Schedule::immediate(t(0))), t(60), &p);
    let b = key(2, successor(t(50), t(60)));
    let r = revoke(&refs(&[a.clone(), b.clone()]), &b.kid, t(55), &p).unwrap();
    assert!(!r.needs_replacement);
    let a2 = r.updates.iter().find(|k| k.kid == a.kid).unwrap();
    assert_eq!(a2.state_at(t(1_000)), KeyState::Active);
}

#[test]
fn rollback_brings_back_the_previous_key_and_retires_the_current_one() {
    let p = policy();
    let a = retire(&key(1, Schedule::immediate(t(0))), t(60), &p);
    let b = key(2, successor(t(50), t(60)));
    let updates = rollback(&refs(&[a.clone(), b.clone()]), t(70), &p).unwrap();
    let (a2, b2) = (&updates[0], &updates[1]);
    assert_eq!((a2.kid.clone(), a2.state_at(t(70))), (a.kid.clone(), KeyState::Active));
    assert_eq!(b2.state_at(t(70)), KeyState::Retiring);
    assert_eq!(b2.schedule.removed_at, Some(t(100)), "the rolled-back key verifies until its overlap ends");
    assert_eq!(rollback(&refs(&[key(3, Schedule::immediate(t(0)))]), t(5), &p), Err(RollbackError::NoPrevious));
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u16),
    Rotate { immediate: bool },
    Revoke(usize),
    Rollback,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..90).prop_map(Op::Advance),
        2 => any::<bool>().prop_map(|immediate| Op::Rotate { immediate }),
        1 => (0usize..8).prop_map(Op::Revoke),
        1 => Just(Op::Rollback),
    ]
}

/// Applies updates by kid, as the key ring does.
fn apply(ring: &mut Vec<KeyRecord>, updates: Vec<KeyRecord>) {
    for u in updates {
        match ring.iter_mut().find(|k| k.kid == u.kid) {
            Some(slot) => *slot = u,
            None => ring.push(u),
        }
    }
}

fn active_count(ring: &[KeyRecord], at: Timestamp) -> usize {
    ring.iter().filter(|k| k.state_at(at) == KeyState::Active).count()
}

proptest! {
    #[test]
    fn exactly_one_key_is_active_through_any_sequence_of_operations(ops in proptest::collection::vec(op(), 1..60)) {
        let p = policy();
        let cron = every(20);
        let mut now = t(1_000);
        let mut ring: Vec<KeyRecord> = Vec::new();
        let next_id = std::cell::Cell::new(1u32);
        let new_key = |s: Schedule| { next_id.set(next_id.get() + 1); key(next_id.get(), s) };
        let reconcile = |ring: &mut Vec<KeyRecord>, now: Timestamp| {
            for action in plan(now, &refs(ring), Some(&cron), &p, false) {
                match action {
                    Action::Initial => apply(ring, vec![new_key(Schedule::immediate(now))]),
                    Action::Promote { kid } => {
                        let mut k = ring.iter().find(|k| k.kid == kid).unwrap().clone();
                        k.schedule.activated_at = now;
                        apply(ring, vec![k]);
                    }
                    Action::Successor { activate_at } => {
                        let mut u = rotation_updates(&refs(ring), now, activate_at, &p).unwrap();
                        u.push(new_key(successor(now, activate_at)));
                        apply(ring, u);
                    }
                    Action::Destroy { kid } => {
                        let mut k = ring.iter().find(|k| k.kid == kid).unwrap().clone();
                        k.handle = KeyHandle::Destroyed;
                        apply(ring, vec![k]);
                    }
                }
            }
        };
        reconcile(&mut ring, now);
        for op in ops {
            match op {
                Op::Advance(d) => now = now.plus(Duration::from_secs(u64::from(d))),
                Op::Rotate { immediate } => {
                    let at = if immediate { now } else { now.plus(p.publish_lead) };
                    if let Some(mut u) = rotation_updates(&refs(&ring), now, at, &p) {
                        u.push(new_key(successor(now, at)));
                        apply(&mut ring, u);
                    }
                }
                Op::Revoke(i) => {
                    let live: Vec<Kid> = ring.iter().filter(|k| k.revoked_at.is_none()).map(|k| k.kid.clone()).collect();
                    if let Some(kid) = live.get(i % live.len().max(1)) {
                        if let Some(r) = revoke(&refs(&ring), kid, now, &p) {
                            let mut u = r.updates;
                            if r.needs_replacement {
                                u.push(new_key(Schedule::immediate(now)));
                            }
                            apply(&mut ring, u);
                        }
                    }
                }
                Op::Rollback => {
                    if let Ok(u) = rollback(&refs(&ring), now, &p) {
                        apply(&mut ring, u);
                    }
                }
            }
            reconcile(&mut ring, now);
            prop_assert_eq!(active_count(&ring, now), 1, "at {:?}: {:#?}", now, ring);
            for ahead in [1u64, 5, 10, 19, 45, 200] {
                prop_assert!(active_count(&ring, now.plus(Duration::from_secs(ahead))) <= 1);
            }
        }
    }
}
