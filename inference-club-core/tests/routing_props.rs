//! Properties of the routing policy, checked against arbitrary candidate sets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use inference_club_core::routing::{
    Availability, Candidate, UNBOUNDED_NOMINAL_CAPACITY, choose, rank,
};
use proptest::prelude::*;

/// Candidate fields without the key; keys are assigned by position so they are unique.
fn candidate_fields() -> impl Strategy<Value = Candidate<()>> {
    (
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.85),
        0u32..10,
        prop::option::weighted(0.8, 0u32..8),
        // A few distinct values so that TTFT ties happen often.
        prop::option::of(0u64..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(serves_model, admits_consumer, online, in_flight, max_concurrent, ttft, resting)| {
                Candidate {
                    key: (),
                    serves_model,
                    admits_consumer,
                    online,
                    in_flight,
                    max_concurrent,
                    recent_ttft: ttft.map(|t| Duration::from_millis(100 * t)),
                    resting,
                }
            },
        )
}

/// Up to 12 candidates keyed 0.., plus an exclusion list drawn from keys 0..16 (some absent).
fn scenario() -> impl Strategy<Value = (Vec<Candidate<u32>>, Vec<u32>, u64)> {
    (
        prop::collection::vec(candidate_fields(), 0..12),
        prop::collection::vec(0u32..16, 0..5),
        any::<u64>(),
    )
        .prop_map(|(fields, excluded, tiebreak)| {
            let candidates = fields
                .into_iter()
                .zip(0u32..)
                .map(|(f, key)| Candidate {
                    key,
                    serves_model: f.serves_model,
                    admits_consumer: f.admits_consumer,
                    online: f.online,
                    in_flight: f.in_flight,
                    max_concurrent: f.max_concurrent,
                    recent_ttft: f.recent_ttft,
                    resting: f.resting,
                })
                .collect();
            (candidates, excluded, tiebreak)
        })
}

fn eligible(c: &Candidate<u32>, excluded: &[u32]) -> bool {
    c.serves_model && c.admits_consumer && c.online && !excluded.contains(&c.key)
}

/// Whether a candidate is ranked: eligible, and not resting while a candidate that does not
/// rest is eligible (rule 6).
fn ranked(c: &Candidate<u32>, all: &[Candidate<u32>], excluded: &[u32]) -> bool {
    eligible(c, excluded)
        && (!c.resting || !all.iter().any(|o| !o.resting && eligible(o, excluded)))
}

/// Relative load as an exact fraction (numerator, denominator), computed independently of the
/// library. Zero capacity never has room, so it never appears where this is used.
fn load(c: &Candidate<u32>) -> (u64, u64) {
    (
        u64::from(c.in_flight),
        u64::from(c.max_concurrent.unwrap_or(UNBOUNDED_NOMINAL_CAPACITY)),
    )
}

fn load_le(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 * b.1 <= b.0 * a.1
}

fn by_key(candidates: &[Candidate<u32>]) -> BTreeMap<u32, &Candidate<u32>> {
    candidates.iter().map(|c| (c.key, c)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_resting_candidate_is_ranked_only_when_no_other_is_left(
        (candidates, excluded, tiebreak) in scenario()
    ) {
        let ranking = rank(&candidates, &excluded, tiebreak);
        let by_key: BTreeMap<u32, &Candidate<u32>> =
            candidates.iter().map(|c| (c.key, c)).collect();
        let others_left = candidates
            .iter()
            .any(|c| !c.resting && eligible(c, &excluded));
        for key in ranking.with_room().iter().chain(ranking.full()) {
            if others_left {
                prop_assert!(!by_key[key].resting, "{key} rests while others are left");
            }
        }
        // With every eligible candidate resting, they are all ranked as usual.
        if !others_left {
            let resting = candidates.iter().filter(|c| eligible(c, &excluded)).count();
            prop_assert_eq!(ranking.with_room().len() + ranking.full().len(), resting);
        }
    }

    #[test]
    fn choose_is_the_first_of_rank_and_the_same_availability(
        (candidates, excluded, tiebreak) in scenario()
    ) {
        let ranking = rank(&candidates, &excluded, tiebreak);
        let choice = choose(&candidates, &excluded, tiebreak);
        prop_assert_eq!(choice.availability, ranking.availability());
        prop_assert_eq!(choice.best.as_ref(), ranking.first());
    }

    #[test]
    fn returns_only_eligible_candidates((candidates, excluded, tiebreak) in scenario()) {
        let ranking = rank(&candidates, &excluded, tiebreak);
        let map = by_key(&candidates);
        for key in ranking.with_room().iter().chain(ranking.full()) {
            let c = map.get(key).expect("returned key comes from the input");
            prop_assert!(c.serves_model, "{key} does not serve the model");
            prop_assert!(c.admits_consumer, "{key} does not admit the consumer");
            prop_assert!(c.online, "{key} is offline");
            prop_assert!(!excluded.contains(key), "{key} is excluded");
        }
    }

    #[test]
    fn output_is_a_duplicate_free_partition_of_the_eligible(
        (candidates, excluded, tiebreak) in scenario()
    ) {
        let ranking = rank(&candidates, &excluded, tiebreak);
        let all: Vec<u32> = ranking.with_room().iter().chain(ranking.full()).copied().collect();
        let unique: BTreeSet<u32> = all.iter().copied().collect();
        prop_assert_eq!(unique.len(), all.len(), "duplicates in {:?}", all);
        let expected: BTreeSet<u32> = candidates
            .iter()
            .filter(|c| ranked(c, &candidates, &excluded))
            .map(|c| c.key)
            .collect();
        prop_assert_eq!(unique, expected);
    }

    #[test]
    fn full_candidates_never_rank_ahead_of_room(
        (candidates, excluded, tiebreak) in scenario()
    ) {
        let ranking = rank(&candidates, &excluded, tiebreak);
        let map = by_key(&candidates);
        for key in ranking.with_room() {
            prop_assert!(map[key].has_room(), "{key} is full but listed with room");
        }
        for key in ranking.full() {
            prop_assert!(!map[key].has_room(), "{key} has room but listed as full");
        }
        let any_room = candidates.iter().any(|c| ranked(c, &candidates, &excluded) && c.has_room());
        if let Some(first) = ranking.first() {
            prop_assert!(map[first].has_room());
        } else {
            prop_assert!(!any_room, "an eligible candidate has room but none was chosen");
        }
    }

    #[test]
    fn first_choice_has_minimal_relative_load(
        (candidates, excluded, tiebreak) in scenario()
    ) {
        let ranking = rank(&candidates, &excluded, tiebreak);
        let map = by_key(&candidates);
        if let Some(first) = ranking.first() {
            let best = load(map[first]);
            for c in candidates.iter().filter(|c| ranked(c, &candidates, &excluded) && c.has_room()) {
                prop_assert!(load_le(best, load(c)), "{first} chosen over less loaded {}", c.key);
            }
        }
        // And the whole with-room list is ordered by load.
        for pair in ranking.with_room().windows(2) {
            prop_assert!(load_le(load(map[&pair[0]]), load(map[&pair[1]])));
        }
    }

    #[test]
    fn availability_matches_the_candidates((candidates, excluded, tiebreak) in scenario()) {
        let ranking = rank(&candidates, &excluded, tiebreak);
        let serving: Vec<_> = candidates.iter().filter(|c| c.serves_model).collect();
        let admitting: Vec<_> = serving.iter().filter(|c| c.admits_consumer).collect();
        let expected = if !ranking.with_room().is_empty() {
            Availability::HasRoom
        } else if !ranking.full().is_empty() {
            Availability::AllFull
        } else if serving.is_empty() {
            Availability::NotServed
        } else if admitting.is_empty() {
            Availability::NotAdmitted
        } else if admitting.iter().any(|c| excluded.contains(&c.key)) {
            Availability::Exhausted
        } else {
            prop_assert!(admitting.iter().all(|c| !c.online));
            Availability::Offline
        };
        prop_assert_eq!(ranking.availability(), expected);
    }

    #[test]
    fn ranking_is_deterministic((candidates, excluded, tiebreak) in scenario()) {
        prop_assert_eq!(
            rank(&candidates, &excluded, tiebreak),
            rank(&candidates, &excluded, tiebreak)
        );
    }

    #[test]
    fn sequential_assignments_spread_evenly_over_equal_candidates(
        n in 1usize..8,
        capacity in prop::option::of(1u32..6),
        ttft in prop::option::of(0u64..1000),
        tiebreaks in prop::collection::vec(any::<u64>(), 0..60),
    ) {
        let mut candidates: Vec<Candidate<usize>> = (0..n)
            .map(|key| Candidate {
                max_concurrent: capacity,
                recent_ttft: ttft.map(Duration::from_millis),
                ..Candidate::new(key)
            })
            .collect();
        for (step, tiebreak) in tiebreaks.into_iter().enumerate() {
            let ranking = rank(&candidates, &[], tiebreak);
            match ranking.first() {
                Some(&chosen) => candidates[chosen].in_flight += 1,
                None => {
                    // Only possible once every candidate is at capacity.
                    let cap = capacity.expect("unbounded candidates always have room");
                    prop_assert_eq!(step, n * cap as usize);
                    prop_assert_eq!(ranking.availability(), Availability::AllFull);
                    break;
                }
            }
            let min = candidates.iter().map(|c| c.in_flight).min().unwrap();
            let max = candidates.iter().map(|c| c.in_flight).max().unwrap();
            prop_assert!(max - min <= 1, "after step {step}: in_flight spread {min}..={max}");
        }
    }

    #[test]
    fn every_equal_idle_candidate_is_first_for_some_tiebreak(
        n in 1usize..12,
        capacity in prop::option::of(1u32..6),
        ttft in prop::option::of(0u64..1000),
        // Stay clear of the u64 wrap, where a counter's residues jump.
        base in 0..u64::MAX - 16,
    ) {
        let candidates: Vec<Candidate<usize>> = (0..n)
            .map(|key| Candidate {
                max_concurrent: capacity,
                recent_ttft: ttft.map(Duration::from_millis),
                ..Candidate::new(key)
            })
            .collect();
        // n consecutive tiebreak values suffice: a counter gives round robin.
        let firsts: BTreeSet<usize> = (0..n as u64)
            .map(|i| *rank(&candidates, &[], base + i).first().unwrap())
            .collect();
        prop_assert_eq!(firsts.len(), n);
    }
}
