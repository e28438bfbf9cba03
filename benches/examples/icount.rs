//! Runs one of the benches' loops a given number of times, for instruction counting under
//! `valgrind --tool=callgrind` (deterministic where wall time on a loaded machine is not):
//!
//! ```text
//! cargo build --release -p gpusched-benches --example icount
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/icount fence 1000
//! ```
//!
//! Run each routine at two iteration counts and divide the difference of the totals by the
//! difference of the counts: setup and teardown cancel out, what remains is the instructions
//! per iteration. Routines: `fence` (create + signal + drop, as the `fence` bench's
//! `create_signal`), `event` (its bare `event_listener::Event` baseline), `raw` (the mock ring
//! alone, `mock_raw`) and `sched` (arm + push on one entity of a mock scheduler,
//! `mock_spread(1, ..)`).

use std::hint::black_box;
use std::sync::Arc;

use event_listener::Event;
use gpusched_benches::{mock_raw, mock_spread};
use gpusched_fence::FenceContext;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(routine), Some(iters)) = (args.next(), args.next()) else {
        eprintln!("usage: icount fence|event|raw|sched ITERATIONS");
        std::process::exit(2);
    };
    let Ok(iters) = iters.parse::<u64>() else {
        eprintln!("icount: ITERATIONS must be a number, not {iters:?}");
        std::process::exit(2);
    };
    match routine.as_str() {
        "fence" => {
            let ctx = FenceContext::new("bench");
            for _ in 0..iters {
                let (fence, signaller) = ctx.next();
                black_box(signaller.signal());
                black_box(fence);
            }
        }
        "event" => {
            for _ in 0..iters {
                let ev = Arc::new(Event::new());
                let waiter_side = ev.clone();
                black_box(ev.notify(usize::MAX));
                black_box(waiter_side);
            }
        }
        "raw" => {
            black_box(mock_raw(iters));
        }
        "sched" => {
            black_box(mock_spread(1, iters));
        }
        other => {
            eprintln!("icount: unknown routine {other:?} (fence, event, raw, sched)");
            std::process::exit(2);
        }
    }
}
