//! The memory a drain's settlements may hold at once (`VALUESTREAM_SETTLE_MEMORY_MB`). A
//! settlement still reads its repository's whole partition and holds it decoded while it derives
//! (issue 30: bounded reads are not built yet), so a repository with a long history needs memory
//! in proportion to it. Without a budget, one such repository made a Lambda drain run out of
//! memory: the process was killed, nothing was put aside, and every drain after it died at the
//! same scope, so no repository behind it settled or exported. With it, a settlement reserves
//! what it will hold before decoding: scopes that fit together settle side by side, a large
//! one waits for room (in turn: reservations are served in the order asked), and one larger than the whole budget fails with [`TooLarge`], which the
//! drain treats as any failed settlement (put aside with backoff, counted, logged with the
//! scope), while the others go on.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Heap a settlement holds per byte of stored record data it reads, rounded up from
/// `cargo bench --bench growth` (docs/performance.md): about 5.6 KiB of peak heap per merged
/// pull request whose records hold about 1.1 KB (8.5 KiB, and a factor of 8, before labels and
/// bucket counts were kept as sorted vectors and contributions summed as they come, 2026-12-07).
pub const HEAP_PER_STORED_BYTE: u64 = 6;

/// The budget, in KiB permits.
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_kib: u64,
}

/// A settlement would need more than the whole budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "settling it would hold about {needed_mib} MiB, more than VALUESTREAM_SETTLE_MEMORY_MB \
     ({budget_mib} MiB): raise it, and the Lambda's memory with it (README, Limits)"
)]
pub struct TooLarge {
    pub needed_mib: u64,
    pub budget_mib: u64,
}

/// Memory reserved for one settlement round, given back when it is dropped.
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let total_kib = (bytes / 1024).clamp(1, u64::from(u32::MAX));
        MemoryBudget {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Reserves what a settlement that read `stored` bytes of records will hold, waiting while
    /// other settlements hold too much of the budget; [`TooLarge`] when it alone exceeds it.
    pub async fn reserve(&self, stored: u64) -> Result<Reservation, TooLarge> {
        let kib = stored.saturating_mul(HEAP_PER_STORED_BYTE).div_ceil(1024);
        if kib > self.total_kib {
            return Err(TooLarge {
                needed_mib: kib.div_ceil(1024),
                budget_mib: self.total_kib / 1024,
            });
        }
        if kib == 0 {
            return Ok(Reservation { _permit: None });
        }
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(kib as u32)
            .await
            .expect("the budget's semaphore is never closed");
        Ok(Reservation {
            _permit: Some(permit),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn a_settlement_larger_than_the_budget_is_refused_with_both_figures() {
        let budget = MemoryBudget::new(HEAP_PER_STORED_BYTE * MIB);
        // 1 MiB of records holds HEAP_PER_STORED_BYTE MiB: it fits exactly; a byte more does not.
        assert!(budget.reserve(MIB).await.is_ok());
        let err = budget.reserve(MIB + 1).await.err().expect("too large");
        assert_eq!(
            (err.needed_mib, err.budget_mib),
            (HEAP_PER_STORED_BYTE + 1, HEAP_PER_STORED_BYTE)
        );
        let named = format!("VALUESTREAM_SETTLE_MEMORY_MB ({HEAP_PER_STORED_BYTE} MiB)");
        assert!(err.to_string().contains(&named), "{err}");
    }

    #[tokio::test]
    async fn settlements_that_do_not_fit_together_wait_in_turn() {
        let budget = Arc::new(MemoryBudget::new(8 * MIB));
        let six_mib = 6 * MIB / HEAP_PER_STORED_BYTE;
        let first = budget.reserve(six_mib).await.unwrap();
        // A second one of 6 MiB does not fit beside the first: it waits until it is dropped.
        let b = budget.clone();
        let second = tokio::spawn(async move { b.reserve(six_mib).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "it waits for room");
        // Reservations are served in turn (tokio's semaphore is fair): a small one that would
        // fit waits behind the large one rather than starve it.
        let b = budget.clone();
        let small =
            tokio::spawn(async move { b.reserve(MIB / HEAP_PER_STORED_BYTE).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!small.is_finished(), "in turn, behind the large one");
        drop(first);
        let got = tokio::time::timeout(Duration::from_secs(5), second).await;
        assert!(matches!(got, Ok(Ok(Ok(())))), "{got:?}");
        let got = tokio::time::timeout(Duration::from_secs(5), small).await;
        assert!(matches!(got, Ok(Ok(Ok(())))), "{got:?}");
    }
}
