//! Which pod takes the next request (`S/pkg/activator/net/lb_policy.go`), by the revision's
//! containerConcurrency: power of two choices when unlimited (0), the first pod with room
//! in address order for 1-3 (packing tiny concurrencies onto few pods), round robin above.

/// A pod and the requests this gateway has in flight on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod<A> {
    pub addr: A,
    pub in_flight: u32,
}

/// The index of the pod that takes the next request, or None when none has room. `next` is
/// the round robin's position, kept between calls.
pub fn pick<A>(pods: &[Pod<A>], cc: u32, next: &mut usize) -> Option<usize> {
    let has_room = |p: &Pod<A>| cc == 0 || p.in_flight < cc;
    match (cc, pods.len()) {
        (_, 0) => None,
        (0, 1) => Some(0),
        (0, n) => {
            // Two distinct pods at random; the less loaded wins, a tie goes either way.
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (x, y) = (pods[a].in_flight, pods[b].in_flight);
            Some(if x < y || (x == y && fastrand::bool()) {
                a
            } else {
                b
            })
        }
        (1..=3, _) => pods.iter().position(has_room),
        (_, n) => {
            let start = *next % n;
            let found = (0..n)
                .map(|i| (start + i) % n)
                .find(|&i| has_room(&pods[i]))?;
            *next = found + 1;
            Some(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(in_flight: &[u32]) -> Vec<Pod<usize>> {
        in_flight
            .iter()
            .enumerate()
            .map(|(addr, &in_flight)| Pod { addr, in_flight })
            .collect()
    }

    #[test]
    fn small_concurrencies_fill_the_first_pod_with_room() {
        let mut next = 0;
        assert_eq!(pick(&pods(&[0, 0, 0]), 1, &mut next), Some(0));
        assert_eq!(pick(&pods(&[1, 0, 0]), 1, &mut next), Some(1));
        assert_eq!(pick(&pods(&[2, 3, 1]), 3, &mut next), Some(0));
        assert_eq!(pick(&pods(&[3, 3, 3]), 3, &mut next), None);
    }

    #[test]
    fn larger_concurrencies_go_round_robin_skipping_full_pods() {
        let mut next = 0;
        let mut p = pods(&[0, 0, 0]);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(pick(&p, 4, &mut next).expect("room"));
        }
        assert_eq!(order, [0, 1, 2, 0]);
        p[1].in_flight = 4;
        assert_eq!(
            pick(&p, 4, &mut next),
            Some(2),
            "after 0 comes 1, full, so 2"
        );
        assert_eq!(pick(&pods(&[4, 4]), 4, &mut next), None);
        // A list that shrank under the position starts over.
        let mut next = 7;
        assert_eq!(pick(&pods(&[0, 0]), 10, &mut next), Some(1));
    }

    #[test]
    fn unlimited_concurrency_prefers_the_less_loaded_of_two() {
        let mut next = 0;
        assert_eq!(pick(&pods(&[]), 0, &mut next), None);
        assert_eq!(pick(&pods(&[9]), 0, &mut next), Some(0));
        for _ in 0..50 {
            assert_eq!(pick(&pods(&[5, 1]), 0, &mut next), Some(1));
        }
        // With three, the busiest pod can only win a draw against itself: never.
        for _ in 0..50 {
            assert_ne!(pick(&pods(&[1, 9, 1]), 0, &mut next), Some(1));
        }
    }
}
