//! Statistical and bookkeeping tests of the replay policies.

use super::*;

type Buf = ReplayCore<u32, 64>;

fn filled(policy: Policy, capacity: usize, items: u32, label: impl Fn(u32) -> u32) -> Buf {
    let mut b = Buf::new(capacity, policy, 42);
    for i in 0..items {
        let _ = b.insert(i, label(i), i / 100).unwrap();
    }
    b
}

#[test]
fn reservoir_keeps_every_item_with_equal_probability() {
    // 20 slots over a stream of 100: each item should survive with p = 0.2. Over 400 seeded
    // runs, count survivals of the first and of the last quarter of the stream.
    let (mut early, mut late) = (0u32, 0u32);
    for seed in 0..400 {
        let mut b = Buf::new(20, Policy::default(), seed);
        for i in 0..100u32 {
            let _ = b.insert(i, 0, 0).unwrap();
        }
        early += b.items().iter().filter(|&&i| i < 25).count() as u32;
        late += b.items().iter().filter(|&&i| i >= 75).count() as u32;
    }
    // Expected 400 * 25 * 0.2 = 2000 each; a FIFO would give 0 early.
    for n in [early, late] {
        assert!((1800..2200).contains(&n), "early {early} late {late}");
    }
}

#[test]
fn class_balanced_equalizes_an_imbalanced_stream() {
    let policy = Policy {
        retention: Retention::ClassBalanced,
        ..Policy::default()
    };
    // 900 items of class 0, then 100 of class 1: reservoir would keep ~10% class 1.
    let b = filled(policy, 40, 1000, |i| u32::from(i >= 900));
    let ones = b.metas().iter().filter(|m| m.label == 1).count();
    assert_eq!(ones, 20, "{:?}", b.classes());
    let counts: u32 = b.classes().iter().map(|c| c.stored).sum();
    assert_eq!(counts as usize, b.len());
    let r = filled(Policy::default(), 40, 1000, |i| u32::from(i >= 900));
    assert!(r.metas().iter().filter(|m| m.label == 1).count() < 12);
}

#[test]
fn power_law_recency_prefers_recent_items_and_uniform_does_not() {
    let recent_share = |sampling| {
        let policy = Policy {
            sampling,
            ..Policy::default()
        };
        let mut b = filled(policy, 64, 64, |_| 0);
        let mut out = [0usize; 8];
        let mut recent = 0;
        for _ in 0..200 {
            b.sample(&mut out);
            let mut sorted = out;
            sorted.sort_unstable();
            assert!(sorted.windows(2).all(|w| w[0] != w[1]), "distinct");
            recent += out.iter().filter(|&&i| i >= 48).count();
        }
        recent as f64 / 1600.0
    };
    let uniform = recent_share(Sampling::Uniform);
    let power = recent_share(Sampling::PowerLawRecency { alpha: 1.0 });
    assert!((0.2..0.3).contains(&uniform), "uniform {uniform}");
    assert!(power > 0.5, "power law {power}");
}

#[test]
fn recall_interval_rests_items_between_recalls() {
    let policy = Policy {
        sampling: Sampling::RecallInterval { interval: 4 },
        ..Policy::default()
    };
    let mut b = filled(policy, 16, 16, |_| 0);
    let mut out = [0usize; 4];
    // 16 items, 4 per batch, rest 4 batches: every item is drawn exactly once per 4 batches.
    for _ in 0..5 {
        let mut seen = [0u32; 16];
        for _ in 0..4 {
            assert_eq!(b.sample(&mut out), 4);
            for &i in &out {
                seen[i] += 1;
            }
        }
        assert_eq!(seen, [1; 16]);
    }
}

#[test]
fn try_push_hands_the_item_back_when_full_and_retain_keeps_counts() {
    let mut b = Buf::new(2, Policy::default(), 0);
    assert_eq!(b.try_push(1, 0, 0), Ok(0));
    assert_eq!(b.try_push(2, 1, 0), Ok(1));
    assert_eq!(b.try_push(3, 1, 0), Err(InsertError::Full(3)));
    assert_eq!(b.items(), &[1, 2]);
    b.retain(|_, m| m.label == 1);
    assert_eq!(b.items(), &[2]);
    assert_eq!(b.classes()[0].stored, 0);
    assert_eq!(b.classes()[1].stored, 1);
}

#[test]
fn too_many_classes_is_an_error_that_changes_nothing() {
    let mut b: ReplayCore<u32, 4> = ReplayCore::new(4, Policy::default(), 0);
    for l in 0..MAX_CLASSES as u32 {
        let _ = b.insert(l, l, 0).unwrap();
    }
    let before = (b.state(), b.items().to_vec());
    assert_eq!(
        b.insert(9, MAX_CLASSES as u32, 0),
        Err(InsertError::TooManyClasses(9))
    );
    assert_eq!((b.state(), b.items().to_vec()), before);
}

#[test]
fn restore_reproduces_the_buffer_and_its_future_draws() {
    let policy = Policy {
        retention: Retention::ClassBalanced,
        sampling: Sampling::PowerLawRecency { alpha: 0.5 },
    };
    let mut a = filled(policy, 16, 300, |i| i % 3);
    let mut out = [0usize; 4];
    a.sample(&mut out);
    let classes: heapless::Vec<(u32, u64), 8> =
        a.classes().iter().map(|c| (c.label, c.seen)).collect();
    let slots = a.metas().iter().copied().zip(a.items().iter().copied());
    let mut b = Buf::restore(16, policy, a.state(), &classes, slots).unwrap();
    assert_eq!(b.metas(), a.metas());
    assert_eq!(b.classes(), a.classes());
    for i in 300..400 {
        assert_eq!(a.insert(i, i % 3, 3), b.insert(i, i % 3, 3));
        let (mut x, mut y) = ([0usize; 4], [0usize; 4]);
        a.sample(&mut x);
        b.sample(&mut y);
        assert_eq!(x, y);
    }
}

#[test]
fn restore_refuses_state_that_does_not_fit() {
    let state = CoreState {
        rng: 0,
        seen: 1,
        step: 0,
    };
    let m = SlotMeta {
        label: 5,
        ..SlotMeta::default()
    };
    let p = Policy::default();
    assert_eq!(
        Buf::restore(0, p, state, &[], []).err(),
        Some(RestoreError::BadCapacity)
    );
    assert_eq!(
        Buf::restore(4, p, state, &[(1, 1)], [(m, 0)]).err(),
        Some(RestoreError::Inconsistent)
    );
    assert_eq!(
        Buf::restore(1, p, state, &[(5, 1)], [(m, 0), (m, 1)]).err(),
        Some(RestoreError::TooManySlots)
    );
    assert_eq!(
        Buf::restore(4, p, state, &[(5, 1), (5, 1)], [(m, 0)]).err(),
        Some(RestoreError::BadClassTable)
    );
}
