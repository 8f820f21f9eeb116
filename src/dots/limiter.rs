//! A client-side rate limiter shared by every Dots call of a process, so a worker runs at the
//! API's limit instead of into a storm of 429s. Spacing, not bursts: each call reserves the
//! next free slot (`1/rps` after the previous one) and waits for it — a virtual-time schedule,
//! so many concurrent jobs queue fairly in arrival order without a background task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// Up to this many calls may go at once before spacing applies.
    burst: u32,
    next: Arc<Mutex<Instant>>,
}

impl RateLimiter {
    /// `rps` requests per second, with a small burst allowance.
    pub fn new(rps: f64, burst: u32) -> RateLimiter {
        let interval = Duration::from_secs_f64(1.0 / rps.max(0.001));
        let burst = burst.max(1);
        let now = Instant::now();
        RateLimiter {
            interval,
            burst,
            next: Arc::new(Mutex::new(
                now.checked_sub(interval * (burst - 1)).unwrap_or(now),
            )),
        }
    }

    /// Waits for this call's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            // Idle time earns back at most `burst` slots.
            let earliest = now
                .checked_sub(self.interval * (self.burst - 1))
                .unwrap_or(now);
            let slot = (*next).max(earliest);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_to_the_rate_after_the_burst() {
        let l = RateLimiter::new(10.0, 2);
        let start = Instant::now();
        for _ in 0..12 {
            l.acquire().await;
        }
        // 2 at once, then 10 more at 100 ms each.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_millis(1100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_limit() {
        let l = RateLimiter::new(20.0, 1);
        let start = Instant::now();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.acquire().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1950) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_does_not_delay_a_single_call() {
        let l = RateLimiter::new(1.0, 1);
        l.acquire().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let start = Instant::now();
        l.acquire().await;
        assert!(start.elapsed() < Duration::from_millis(1));
    }
}
