//! Selection policy: which candidate a request goes to, and in which order to fail over.
//!
//! This module is pure: no I/O, no clock, no hidden randomness. The same policy serves twice:
//! the coordinator ranks provider nodes for a request, and a node's router ranks its local
//! backends for a model. The caller describes each place a request could go as a
//! [`Candidate`], names the ones that already failed this request (failover), and passes a
//! `tiebreak` number (random, or a rotating counter) that spreads equal candidates.
//!
//! [`rank`] returns a [`Ranking`]: the candidates with room, best first; the full ones (which
//! the caller may wait for); and an [`Availability`] that says why nothing can be tried when
//! both lists are empty.
//!
//! # Rules
//!
//! 1. Only candidates that serve the model, admit the consumer, are online and are not
//!    excluded are ever returned.
//! 2. A candidate whose `in_flight` is at or above its `max_concurrent` is full; it is never
//!    in [`Ranking::with_room`], only in [`Ranking::full`].
//! 3. Both lists are ordered by relative load, `in_flight / max_concurrent`, least loaded
//!    first, compared exactly (integer cross-multiplication). An unbounded candidate
//!    (`max_concurrent: None`) is measured against [`UNBOUNDED_NOMINAL_CAPACITY`]: with that
//!    many requests in flight it counts as loaded as a bounded candidate at its limit, but it
//!    never becomes full. A candidate with `max_concurrent: Some(0)` is always full and sorts
//!    after every other full candidate.
//! 4. Equal load is broken by recent time to first token: an unknown TTFT comes first (so a
//!    new candidate gets measured instead of starving behind known ones at low traffic), then
//!    known TTFTs, fastest first. Feed a penalty sample into the candidate's [`Ewma`] when an
//!    attempt fails before its first token, so a failing candidate does not stay "unknown".
//! 5. Candidates still equal after that are ordered by their position in the input slice,
//!    rotated left by `tiebreak` modulo the size of the tied group: successive tiebreak values
//!    `0, 1, 2, ...` put each member of the group first in turn (round robin), and a random
//!    tiebreak picks uniformly among them.
//! 6. A resting candidate (one that failed recently) is passed over while any other eligible
//!    candidate, with room or full, remains; when none does, resting candidates count as any
//!    other, so a request is never refused only because every candidate failed a while ago.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use inference_club_core::routing::{rank, Availability, Candidate};
//!
//! let nodes = vec![
//!     // Busy: 3 of 4 slots used.
//!     Candidate { in_flight: 3, max_concurrent: Some(4), ..Candidate::new("alpha") },
//!     // Idle but slower.
//!     Candidate {
//!         max_concurrent: Some(4),
//!         recent_ttft: Some(Duration::from_millis(900)),
//!         ..Candidate::new("beta")
//!     },
//!     // Idle and faster.
//!     Candidate {
//!         max_concurrent: Some(8),
//!         recent_ttft: Some(Duration::from_millis(200)),
//!         ..Candidate::new("gamma")
//!     },
//!     // Full.
//!     Candidate { in_flight: 2, max_concurrent: Some(2), ..Candidate::new("delta") },
//!     // Does not admit this consumer: never returned.
//!     Candidate { admits_consumer: false, ..Candidate::new("epsilon") },
//! ];
//!
//! let ranking = rank(&nodes, &[], 0);
//! assert_eq!(ranking.availability(), Availability::HasRoom);
//! assert_eq!(ranking.with_room(), &["gamma", "beta", "alpha"]);
//! assert_eq!(ranking.full(), &["delta"]);
//!
//! // gamma failed before its first token: fail over to the next one.
//! let retry = rank(&nodes, &["gamma"], 0);
//! assert_eq!(retry.first(), Some(&"beta"));
//! ```

pub mod failover;

use std::cmp::Ordering;
use std::time::Duration;

/// The capacity an unbounded candidate (`max_concurrent: None`) is measured against when its
/// load is compared with others'.
///
/// An unbounded candidate with this many requests in flight is as loaded as a bounded one at
/// its limit; it is never full, so it keeps accepting beyond that, behind less loaded peers.
pub const UNBOUNDED_NOMINAL_CAPACITY: u32 = 8;

/// One place a request could go: a node (for the coordinator) or a backend (for a node's router).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    /// Opaque identity of the candidate (node id, backend index, ...), returned by [`rank`].
    pub key: K,
    /// The candidate serves the requested model.
    pub serves_model: bool,
    /// The candidate's access policy admits the requesting consumer.
    pub admits_consumer: bool,
    /// The candidate is reachable now.
    pub online: bool,
    /// Requests running on the candidate now.
    pub in_flight: u32,
    /// How many requests the candidate runs at once; `None` means unbounded (see
    /// [`UNBOUNDED_NOMINAL_CAPACITY`]).
    pub max_concurrent: Option<u32>,
    /// Recent time to first token (for example an [`Ewma`]); `None` when not yet measured.
    pub recent_ttft: Option<Duration>,
    /// The candidate failed recently and is resting: it is chosen only when no other eligible
    /// candidate is left (rule 6).
    pub resting: bool,
}

impl<K> Candidate<K> {
    /// A candidate that serves the model, admits the consumer and is online, with nothing in
    /// flight, unbounded capacity and unknown TTFT. Override fields with struct update syntax.
    pub fn new(key: K) -> Self {
        Self {
            key,
            serves_model: true,
            admits_consumer: true,
            online: true,
            in_flight: 0,
            max_concurrent: None,
            recent_ttft: None,
            resting: false,
        }
    }

    /// Whether the candidate can take one more request now: it is below its `max_concurrent`,
    /// or unbounded. Says nothing about eligibility (model, consumer, online).
    pub fn has_room(&self) -> bool {
        self.max_concurrent.is_none_or(|max| self.in_flight < max)
    }

    /// The relative load of this candidate, as an exact fraction.
    fn load(&self) -> Load {
        let capacity = self.max_concurrent.unwrap_or(UNBOUNDED_NOMINAL_CAPACITY);
        if capacity == 0 {
            Load::Infinite
        } else {
            Load::Ratio {
                in_flight: u64::from(self.in_flight),
                capacity: u64::from(capacity),
            }
        }
    }
}

/// Relative load `in_flight / capacity`, compared exactly.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// `capacity > 0`.
    Ratio { in_flight: u64, capacity: u64 },
    /// Zero capacity: loaded beyond any ratio.
    Infinite,
}

impl Load {
    fn compare(self, other: Self) -> Ordering {
        match (self, other) {
            (
                Self::Ratio {
                    in_flight: a,
                    capacity: b,
                },
                Self::Ratio {
                    in_flight: c,
                    capacity: d,
                },
            ) => {
                // a/b vs c/d with b, d > 0; both products fit in u64 as the factors are u32.
                (a * d).cmp(&(c * b))
            }
            (Self::Ratio { .. }, Self::Infinite) => Ordering::Less,
            (Self::Infinite, Self::Ratio { .. }) => Ordering::Greater,
            (Self::Infinite, Self::Infinite) => Ordering::Equal,
        }
    }
}

/// Unknown TTFT first, then known, fastest first.
fn compare_ttft(a: Option<Duration>, b: Option<Duration>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(&y),
    }
}

/// Why a request can or cannot be placed, as far as the candidates tell.
///
/// The variants are checked in this order: the first that applies is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Availability {
    /// No candidate serves the requested model (for an API: model not found).
    NotServed,
    /// Some candidates serve the model, but none admits this consumer (for an API: forbidden).
    NotAdmitted,
    /// Some candidates serve the model and admit the consumer, and at least one of those was
    /// excluded (already tried for this request); none of the others is online. Failover is
    /// exhausted: report the last attempt's error.
    Exhausted,
    /// Candidates serve the model and admit the consumer, but none is online and none was
    /// tried (for an API: service unavailable).
    Offline,
    /// Every candidate that could take the request is at capacity: [`Ranking::full`] lists
    /// them; the caller may wait in a queue for one to free up.
    AllFull,
    /// At least one candidate has room: [`Ranking::with_room`] lists them, best first.
    HasRoom,
}

/// The outcome of [`rank`]: where to send a request, in order, and why not if nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranking<K> {
    with_room: Vec<K>,
    full: Vec<K>,
    availability: Availability,
}

impl<K> Ranking<K> {
    /// Whether and why the request can be placed.
    pub fn availability(&self) -> Availability {
        self.availability
    }

    /// Eligible candidates below capacity, best first: the order to try them in.
    pub fn with_room(&self) -> &[K] {
        &self.with_room
    }

    /// Eligible candidates at or above capacity, least overloaded first. None of them is in
    /// [`Ranking::with_room`].
    pub fn full(&self) -> &[K] {
        &self.full
    }

    /// The best candidate with room, if any.
    pub fn first(&self) -> Option<&K> {
        self.with_room.first()
    }

    /// The two lists, `(with_room, full)`.
    pub fn into_parts(self) -> (Vec<K>, Vec<K>) {
        (self.with_room, self.full)
    }
}

/// Orders the candidates for one request.
///
/// `excluded` names candidates that already failed this request; they are never returned.
/// `tiebreak` spreads candidates that are otherwise equal (see the [module docs](self)):
/// pass a random number or a counter that advances per request.
///
/// Duplicate keys in `candidates` are not merged: give each candidate its own key.
pub fn rank<K: Clone + Eq>(
    candidates: &[Candidate<K>],
    excluded: &[K],
    tiebreak: u64,
) -> Ranking<K> {
    let (with_room, full, availability) = classify(candidates, excluded);
    Ranking {
        with_room: order(with_room, tiebreak),
        full: order(full, tiebreak),
        availability,
    }
}

/// The outcome of [`choose`]: the best candidate with room, and why not if none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice<K> {
    /// Whether and why the request can be placed.
    pub availability: Availability,
    /// The best candidate with room: [`Ranking::first`] of [`rank`] on the same input.
    pub best: Option<K>,
}

/// The first candidate [`rank`] would return and its [`Availability`], without ordering the
/// rest: one pass over the candidates instead of a sort, for callers that try one candidate
/// at a time (the coordinator, per request, among possibly thousands of nodes).
///
/// ```
/// use inference_club_core::routing::{choose, rank, Candidate};
///
/// let nodes = vec![
///     Candidate { in_flight: 3, max_concurrent: Some(4), ..Candidate::new("busy") },
///     Candidate { in_flight: 1, max_concurrent: Some(4), ..Candidate::new("idle") },
/// ];
/// let choice = choose(&nodes, &[], 0);
/// assert_eq!(choice.best, Some("idle"));
/// assert_eq!(choice.best.as_ref(), rank(&nodes, &[], 0).first());
/// ```
pub fn choose<K: Clone + Eq>(
    candidates: &[Candidate<K>],
    excluded: &[K],
    tiebreak: u64,
) -> Choice<K> {
    let (with_room, _, availability) = classify(candidates, excluded);
    Choice {
        availability,
        best: best_of(&with_room, tiebreak),
    }
}

/// The eligible candidates with room and the full ones (each in input order, with their
/// positions), and the availability they add up to (rules 1 and 2).
#[allow(clippy::type_complexity)]
fn classify<'a, K: Eq>(
    candidates: &'a [Candidate<K>],
    excluded: &[K],
) -> (
    Vec<(usize, &'a Candidate<K>)>,
    Vec<(usize, &'a Candidate<K>)>,
    Availability,
) {
    let mut any_serves = false;
    let mut any_admits = false;
    let mut any_excluded = false;
    let mut with_room: Vec<(usize, &Candidate<K>)> = Vec::new();
    let mut full: Vec<(usize, &Candidate<K>)> = Vec::new();

    let mut resting_with_room: Vec<(usize, &Candidate<K>)> = Vec::new();
    let mut resting_full: Vec<(usize, &Candidate<K>)> = Vec::new();

    for (position, candidate) in candidates.iter().enumerate() {
        if !candidate.serves_model {
            continue;
        }
        any_serves = true;
        if !candidate.admits_consumer {
            continue;
        }
        any_admits = true;
        if excluded.contains(&candidate.key) {
            any_excluded = true;
            continue;
        }
        if !candidate.online {
            continue;
        }
        let (room, busy) = if candidate.resting {
            (&mut resting_with_room, &mut resting_full)
        } else {
            (&mut with_room, &mut full)
        };
        if candidate.has_room() {
            room.push((position, candidate));
        } else {
            busy.push((position, candidate));
        }
    }
    // Rule 6: resting candidates only when nothing else is left.
    if with_room.is_empty() && full.is_empty() {
        with_room = resting_with_room;
        full = resting_full;
    }

    let availability = if !with_room.is_empty() {
        Availability::HasRoom
    } else if !full.is_empty() {
        Availability::AllFull
    } else if !any_serves {
        Availability::NotServed
    } else if !any_admits {
        Availability::NotAdmitted
    } else if any_excluded {
        Availability::Exhausted
    } else {
        Availability::Offline
    };
    (with_room, full, availability)
}

/// Rules 3 and 4: load, then recent TTFT.
fn rank_key<K>(a: &Candidate<K>, b: &Candidate<K>) -> Ordering {
    a.load()
        .compare(b.load())
        .then_with(|| compare_ttft(a.recent_ttft, b.recent_ttft))
}

/// What [`order`] would put first, in one pass: of the run of candidates equal to the least
/// (load, TTFT), in position order, the one `tiebreak` rotates to the front (rule 5).
fn best_of<K: Clone>(group: &[(usize, &Candidate<K>)], tiebreak: u64) -> Option<K> {
    let (_, least) = group.iter().min_by(|(_, a), (_, b)| rank_key(a, b))?;
    let run = group
        .iter()
        .filter(|(_, c)| rank_key(c, least) == Ordering::Equal);
    let len = run.clone().count() as u64;
    // `tiebreak % len < len`, and `len` came from a usize, so this cannot truncate.
    let shift = (tiebreak % len.max(1)) as usize;
    run.map(|(_, c)| c.key.clone()).nth(shift)
}

/// Sorts by (load, TTFT, position), then rotates each run of equal (load, TTFT) by `tiebreak`.
fn order<K: Clone>(mut group: Vec<(usize, &Candidate<K>)>, tiebreak: u64) -> Vec<K> {
    group.sort_by(|(pa, a), (pb, b)| rank_key(a, b).then(pa.cmp(pb)));

    let mut start = 0;
    while start < group.len() {
        let mut end = start + 1;
        while let (Some((_, first)), Some((_, next))) = (group.get(start), group.get(end)) {
            if rank_key(first, next) != Ordering::Equal {
                break;
            }
            end += 1;
        }
        if let Some(run) = group.get_mut(start..end) {
            let len = run.len() as u64;
            // `tiebreak % len < len`, and `len` came from a usize, so this cannot truncate.
            let shift = (tiebreak % len) as usize;
            run.rotate_left(shift);
        }
        start = end;
    }

    group
        .into_iter()
        .map(|(_, candidate)| candidate.key.clone())
        .collect()
}

/// Exponentially weighted moving average of a duration, such as time to first token.
///
/// Each sample moves the average by `weight_percent` percent of the difference between the
/// sample and the average; the first sample sets the average outright. Integer arithmetic on
/// nanoseconds, rounded to nearest: no floating point.
///
/// ```
/// use std::time::Duration;
/// use inference_club_core::routing::Ewma;
///
/// let mut ttft = Ewma::new(25);
/// assert_eq!(ttft.value(), None);
/// assert_eq!(ttft.update(Duration::from_millis(400)), Duration::from_millis(400));
/// assert_eq!(ttft.update(Duration::from_millis(800)), Duration::from_millis(500));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ewma {
    value: Option<Duration>,
    weight_percent: u8,
}

impl Ewma {
    /// The weight [`Ewma::default`] gives each new sample, in percent.
    pub const DEFAULT_WEIGHT_PERCENT: u8 = 20;

    /// An empty average whose new samples weigh `weight_percent` percent, clamped to `1..=100`
    /// (100 keeps only the latest sample).
    pub fn new(weight_percent: u8) -> Self {
        Self {
            value: None,
            weight_percent: weight_percent.clamp(1, 100),
        }
    }

    /// The current average, `None` before the first sample.
    pub fn value(&self) -> Option<Duration> {
        self.value
    }

    /// The weight of a new sample, in percent (`1..=100`).
    pub fn weight_percent(&self) -> u8 {
        self.weight_percent
    }

    /// Folds in one sample and returns the new average.
    pub fn update(&mut self, sample: Duration) -> Duration {
        let next = match self.value {
            None => sample,
            Some(current) => {
                let weight = u128::from(self.weight_percent);
                let mixed = current.as_nanos() * (100 - weight) + sample.as_nanos() * weight + 50;
                nanos_to_duration(mixed / 100)
            }
        };
        self.value = Some(next);
        next
    }
}

impl Default for Ewma {
    /// An empty average with [`Ewma::DEFAULT_WEIGHT_PERCENT`].
    fn default() -> Self {
        Self::new(Self::DEFAULT_WEIGHT_PERCENT)
    }
}

/// Nanoseconds back to a duration. The value is a weighted mean of two durations, so it never
/// exceeds [`Duration::MAX`]; saturate anyway rather than trust that.
fn nanos_to_duration(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below one second, so it fits in u32 and the sum cannot overflow.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: u32) -> Candidate<u32> {
        Candidate::new(key)
    }

    fn bounded(key: u32, in_flight: u32, max: u32) -> Candidate<u32> {
        Candidate {
            in_flight,
            max_concurrent: Some(max),
            ..c(key)
        }
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn ineligible_candidates_are_never_returned() {
        let cands = vec![
            Candidate {
                serves_model: false,
                ..c(1)
            },
            Candidate {
                admits_consumer: false,
                ..c(2)
            },
            Candidate {
                online: false,
                ..c(3)
            },
            c(4),
            c(5),
        ];
        let r = rank(&cands, &[5], 0);
        assert_eq!(r.with_room(), &[4]);
        assert!(r.full().is_empty());
        assert_eq!(r.availability(), Availability::HasRoom);
    }

    #[test]
    fn empty_input_is_not_served() {
        let r = rank::<u32>(&[], &[], 7);
        assert_eq!(r.availability(), Availability::NotServed);
        assert_eq!(r.first(), None);
    }

    #[test]
    fn availability_distinguishes_each_reason() {
        let not_serving = || Candidate {
            serves_model: false,
            ..c(1)
        };
        let not_admitting = || Candidate {
            admits_consumer: false,
            ..c(2)
        };
        let offline = || Candidate {
            online: false,
            ..c(3)
        };
        let full = || bounded(4, 1, 1);

        let avail =
            |cands: &[Candidate<u32>], excluded: &[u32]| rank(cands, excluded, 0).availability();
        assert_eq!(avail(&[not_serving()], &[]), Availability::NotServed);
        assert_eq!(
            avail(&[not_serving(), not_admitting()], &[]),
            Availability::NotAdmitted
        );
        assert_eq!(
            avail(&[not_admitting(), offline()], &[]),
            Availability::Offline
        );
        assert_eq!(avail(&[offline(), c(5)], &[5]), Availability::Exhausted);
        // Excluded and offline at once still counts as tried.
        assert_eq!(avail(&[offline()], &[3]), Availability::Exhausted);
        assert_eq!(avail(&[offline(), full()], &[]), Availability::AllFull);
        assert_eq!(avail(&[full(), c(6)], &[]), Availability::HasRoom);
        // A full candidate that was excluded is not waited for.
        assert_eq!(avail(&[bounded(7, 2, 2)], &[7]), Availability::Exhausted);
    }

    #[test]
    fn full_candidates_are_listed_separately() {
        let cands = vec![bounded(1, 4, 4), bounded(2, 5, 4), bounded(3, 3, 4)];
        let r = rank(&cands, &[], 0);
        assert_eq!(r.with_room(), &[3]);
        assert_eq!(r.full(), &[1, 2]);
        let (room, full) = r.into_parts();
        assert_eq!((room, full), (vec![3], vec![1, 2]));
    }

    #[test]
    fn all_full_keeps_order_by_overload() {
        let cands = vec![bounded(1, 9, 4), bounded(2, 2, 2), bounded(3, 0, 0)];
        let r = rank(&cands, &[], 0);
        assert_eq!(r.availability(), Availability::AllFull);
        assert!(r.with_room().is_empty());
        assert_eq!(r.full(), &[2, 1, 3]);
    }

    #[test]
    fn zero_capacity_is_always_full() {
        let z = bounded(1, 0, 0);
        assert!(!z.has_room());
        let r = rank(&[z], &[], 0);
        assert_eq!(r.availability(), Availability::AllFull);
        assert_eq!(r.full(), &[1]);
    }

    #[test]
    fn least_relative_load_first() {
        // 3/4 = 0.75, 1/2 = 0.5, 2/8 = 0.25
        let cands = vec![bounded(1, 3, 4), bounded(2, 1, 2), bounded(3, 2, 8)];
        assert_eq!(rank(&cands, &[], 0).with_room(), &[3, 2, 1]);
    }

    #[test]
    fn load_ratio_is_exact() {
        // 1/3 vs 333_333_333/1_000_000_000: an f32 would call these equal.
        let cands = vec![bounded(1, 1, 3), bounded(2, 333_333_333, 1_000_000_000)];
        assert_eq!(rank(&cands, &[], 0).with_room(), &[2, 1]);
        // Extreme values do not overflow.
        let cands = vec![
            bounded(1, u32::MAX - 1, u32::MAX),
            bounded(2, u32::MAX - 2, u32::MAX),
        ];
        assert_eq!(rank(&cands, &[], 0).with_room(), &[2, 1]);
    }

    #[test]
    fn unbounded_uses_nominal_capacity() {
        let n = UNBOUNDED_NOMINAL_CAPACITY;
        // Unbounded with n/2 in flight equals bounded 1 of 2: tie, then position.
        let half = Candidate {
            in_flight: n / 2,
            ..c(1)
        };
        let cands = vec![half, bounded(2, 1, 2), bounded(3, 1, 4)];
        assert_eq!(rank(&cands, &[], 0).with_room(), &[3, 1, 2]);
        // Never full, however loaded.
        let busy = Candidate {
            in_flight: u32::MAX,
            ..c(4)
        };
        assert!(busy.has_room());
        let r = rank(&[busy, bounded(5, 1, 1)], &[], 0);
        assert_eq!(r.with_room(), &[4]);
        assert_eq!(r.full(), &[5]);
    }

    #[test]
    fn equal_load_prefers_unknown_then_faster_ttft() {
        let cands = vec![
            Candidate {
                recent_ttft: ms(500),
                ..c(1)
            },
            Candidate {
                recent_ttft: ms(100),
                ..c(2)
            },
            c(3),
            Candidate {
                in_flight: 1,
                recent_ttft: ms(1),
                ..c(4)
            },
        ];
        for tiebreak in 0..4 {
            assert_eq!(rank(&cands, &[], tiebreak).with_room(), &[3, 2, 1, 4]);
        }
    }

    #[test]
    fn tiebreak_rotates_equal_candidates() {
        let cands = vec![c(10), c(11), c(12)];
        assert_eq!(rank(&cands, &[], 0).with_room(), &[10, 11, 12]);
        assert_eq!(rank(&cands, &[], 1).with_room(), &[11, 12, 10]);
        assert_eq!(rank(&cands, &[], 2).with_room(), &[12, 10, 11]);
        assert_eq!(rank(&cands, &[], 3).with_room(), &[10, 11, 12]);
        assert_eq!(rank(&cands, &[], u64::MAX).with_room(), &[10, 11, 12]);
    }

    #[test]
    fn tiebreak_only_reorders_within_a_tie() {
        let cands = vec![bounded(1, 1, 2), c(2), bounded(3, 1, 2), c(4)];
        assert_eq!(rank(&cands, &[], 0).with_room(), &[2, 4, 1, 3]);
        assert_eq!(rank(&cands, &[], 1).with_room(), &[4, 2, 3, 1]);
    }

    #[test]
    fn failover_skips_excluded() {
        let cands = vec![c(1), c(2), c(3)];
        let r = rank(&cands, &[1, 3], 0);
        assert_eq!(r.with_room(), &[2]);
        let r = rank(&cands, &[1, 2, 3], 0);
        assert_eq!(r.availability(), Availability::Exhausted);
        assert!(r.with_room().is_empty() && r.full().is_empty());
    }

    #[test]
    fn ewma_first_sample_sets_value() {
        let mut e = Ewma::default();
        assert_eq!(e.weight_percent(), Ewma::DEFAULT_WEIGHT_PERCENT);
        assert_eq!(e.value(), None);
        assert_eq!(
            e.update(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(e.value(), Some(Duration::from_millis(300)));
    }

    #[test]
    fn ewma_moves_by_weight() {
        let mut e = Ewma::new(50);
        e.update(Duration::from_millis(100));
        assert_eq!(
            e.update(Duration::from_millis(300)),
            Duration::from_millis(200)
        );
        assert_eq!(
            e.update(Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn ewma_weight_is_clamped() {
        assert_eq!(Ewma::new(0).weight_percent(), 1);
        assert_eq!(Ewma::new(255).weight_percent(), 100);
        let mut last_only = Ewma::new(100);
        last_only.update(Duration::from_secs(5));
        assert_eq!(
            last_only.update(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn ewma_handles_extremes() {
        let mut e = Ewma::new(30);
        e.update(Duration::MAX);
        assert_eq!(e.update(Duration::MAX), Duration::MAX);
        assert!(e.update(Duration::ZERO) < Duration::MAX);
        let mut e = Ewma::new(1);
        e.update(Duration::ZERO);
        assert_eq!(e.update(Duration::from_nanos(1)), Duration::ZERO);
    }
}
