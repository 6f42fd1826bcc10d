//! Which of a revision's pods this gateway uses when several gateway replicas play the
//! activator (contract §4.3, Knative's `assignSlice`): with the pods sorted by `ip:port` as
//! text, each replica takes a contiguous slice and the remainder goes one pod each to
//! replicas 0..r-1; with fewer pods than replicas, replica i takes pod i mod n. So the
//! replicas together never put more than containerConcurrency on a pod.

use std::net::SocketAddr;

/// This replica's place among the gateway replicas sharing the activator role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub replicas: usize,
}

impl Share {
    /// Replica `index` of `replicas`; None when the index is not below the count.
    pub fn new(index: usize, replicas: usize) -> Option<Share> {
        (index < replicas).then_some(Share { index, replicas })
    }
}

/// The pods (any order) that `share` gives this replica, in address order. Without a share
/// (not among the replicas, Knative's index -1) or with one pod, all of them.
pub fn assigned(mut pods: Vec<SocketAddr>, share: Option<Share>) -> Vec<SocketAddr> {
    let n = pods.len();
    let Some(Share { index, replicas }) = share.filter(|_| n > 1) else {
        pods.sort_unstable();
        return pods;
    };
    // Knative sorts the `ip:port` strings: every replica must agree on the order.
    pods.sort_by_cached_key(|p| p.to_string());
    let mut mine = if replicas > n {
        vec![pods[index % n]]
    } else {
        let size = n / replicas;
        let mut slice = pods[index * size..(index + 1) * size].to_vec();
        let remainder = &pods[n - n % replicas..];
        slice.extend(remainder.get(index));
        slice
    };
    mine.sort_unstable();
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 8012))
    }

    fn lasts(pods: &[SocketAddr]) -> Vec<u8> {
        pods.iter()
            .map(|p| match p.ip() {
                std::net::IpAddr::V4(ip) => ip.octets()[3],
                std::net::IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    fn share(index: usize, replicas: usize) -> Option<Share> {
        Share::new(index, replicas)
    }

    #[test]
    fn replicas_take_contiguous_slices_and_the_remainder_one_each_from_the_first() {
        let pods: Vec<_> = (1..=7).map(pod).collect();
        let taken: Vec<_> = (0..3)
            .map(|i| lasts(&assigned(pods.clone(), share(i, 3))))
            .collect();
        // 7 pods, 3 replicas: slices of 2, and pod 7 (the remainder) to replica 0.
        assert_eq!(taken, [vec![1, 2, 7], vec![3, 4], vec![5, 6]]);
    }

    #[test]
    fn pods_are_ordered_as_text_as_every_knative_activator_orders_them() {
        let pods = vec![pod(2), pod(10), pod(3), pod(1)];
        // As text: 10.0.0.1, 10.0.0.10, 10.0.0.2, 10.0.0.3.
        assert_eq!(lasts(&assigned(pods.clone(), share(0, 2))), [1, 10]);
        assert_eq!(lasts(&assigned(pods, share(1, 2))), [2, 3]);
    }

    #[test]
    fn with_fewer_pods_than_replicas_each_takes_one_in_turn() {
        let pods = vec![pod(1), pod(2)];
        let taken: Vec<_> = (0..5)
            .map(|i| lasts(&assigned(pods.clone(), share(i, 5))))
            .collect();
        assert_eq!(taken, [[1], [2], [1], [2], [1]]);
    }

    #[test]
    fn one_pod_or_no_share_means_every_pod() {
        assert_eq!(lasts(&assigned(vec![pod(4)], share(2, 3))), [4]);
        assert_eq!(lasts(&assigned(vec![pod(2), pod(1)], None)), [1, 2]);
        assert!(assigned(Vec::new(), share(0, 2)).is_empty());
        assert_eq!(
            Share::new(3, 3),
            None,
            "an index past the count is no share"
        );
    }
}
