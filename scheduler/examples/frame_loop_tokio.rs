//! A headless frame loop on tokio: two mock rings (compute and graphics), frame `N`'s render
//! job depends on its simulation job (another ring) and on frame `N-2`'s render (the
//! swapchain image it reuses, two images), and the loop `.await`s frame `N-2`'s finished fence
//! before it "presents" it. Fences implement `IntoFuture`, so any executor can await them.
//!
//! Run: `cargo run -p gpusched --example frame_loop_tokio`. It exits non-zero if a frame
//! finished out of order or failed. The Vulkan version of this loop comes with the
//! `gpusched-vulkan` backend; here the rings are `MockRing::timed()` (each job completes its
//! `duration` after it started, on a completion thread).

#[path = "shared/frame_loop.rs"]
mod frame_loop;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let report = frame_loop::frame_loop("frame_loop_tokio", |_frame| async {}).await;
    println!("{report}");
}
