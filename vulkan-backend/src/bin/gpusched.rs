//! `gpusched`: the project's demo on the default Vulkan device (lavapipe when there is no GPU).
//!
//! `gpusched demo` runs several clients (entities) at different priorities over two rings of
//! one device. Each client submits, per round, a chain of compute jobs over its own buffers
//! and a buffer shared by all clients (implicit synchronisation through the buffers'
//! reservation objects), then the results are read back and verified on the host. It prints
//! a summary: jobs, throughput, submit-to-finish latency per priority, fences signalled ok /
//! with error (their sum must equal the fences published), validation errors and checker
//! violations (both must be 0). The exit status is non-zero when any check fails.
//!
//! Fault injection (a hang, a client banned for hanging, a device loss) and live progress
//! bars are the next step of the demo (see the issues).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use gpusched::fence::{lockdep, Fence, FenceStatus};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{Buffer, Builtin, DeviceConfig, VulkanDevice, VulkanJob};

const USAGE: &str = "\
gpusched: a GPU job scheduler runtime (the Linux DRM synchronisation contract, in Rust)

USAGE:
    gpusched demo [OPTIONS]
    gpusched --help

COMMANDS:
    demo    Run several clients at different priorities submitting chains of compute jobs
            over shared buffers on the default Vulkan device, verify the results on the
            host and print a summary.

OPTIONS (demo):
    --clients <N>     number of clients, 1..=16 (default 4); priorities cycle through
                      high, normal, low, kernel
    --rounds <N>      rounds of jobs per client, 1..=10000 (default 50)
    --size <N>        floats per buffer, 64..=4194304 (default 65536)
    --validation      enable the Khronos validation layer (also GPUSCHED_VALIDATION=1)
    -h, --help        print this help

ENVIRONMENT:
    GPUSCHED_DEVICE       pick a Vulkan device by index or name substring
    GPUSCHED_VALIDATION   1 enables the validation layer
";

/// The demo's parameters.
#[derive(Debug)]
struct Options {
    clients: usize,
    rounds: u32,
    size: u32,
    validation: bool,
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        None => return Err("missing command: try `gpusched demo` or `gpusched --help`".into()),
        Some("-h" | "--help" | "help") => return Ok(None),
        Some("demo") => {}
        Some(other) => return Err(format!("unknown command `{other}`: the command is `demo`")),
    }
    let mut o = Options { clients: 4, rounds: 50, size: 65_536, validation: false };
    while let Some(flag) = it.next() {
        let mut value = |name: &str, lo: u64, hi: u64| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            let n: u64 = v.parse().map_err(|_| format!("{name}: `{v}` is not a number"))?;
            if n < lo || n > hi {
                return Err(format!("{name}: {n} is out of range {lo}..={hi}"));
            }
            Ok(n)
        };
        match flag.as_str() {
            "--clients" => o.clients = value("--clients", 1, 16)? as usize,
            "--rounds" => o.rounds = value("--rounds", 1, 10_000)? as u32,
            "--size" => o.size = value("--size", 64, 4 << 20)? as u32,
            "--validation" => o.validation = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown flag `{other}` (see `gpusched --help`)")),
        }
    }
    Ok(Some(o))
}

fn push_consts(words: &[[u8; 4]]) -> Vec<u8> {
    words.concat()
}

/// `buf[i] = value` for `n` floats.
fn fill(buf: &Buffer, value: f32, n: u32) -> VulkanJob {
    let b = buf.clone();
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Fill);
        let pc = push_consts(&[value.to_ne_bytes(), n.to_ne_bytes()]);
        ctx.dispatch(cb, &k, &[&b], &pc, [n.div_ceil(64), 1, 1])
    })
    .writes(buf)
}

/// `y = a * x + y` over `n` floats.
fn saxpy(a: f32, x: &Buffer, y: &Buffer, n: u32) -> VulkanJob {
    let (xb, yb) = (x.clone(), y.clone());
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Saxpy);
        let pc = push_consts(&[a.to_ne_bytes(), n.to_ne_bytes()]);
        ctx.dispatch(cb, &k, &[&xb, &yb], &pc, [n.div_ceil(64), 1, 1])
    })
    .reads(x)
    .writes(y)
}

struct Client {
    priority: Priority,
    entity: Entity<gpusched_vulkan::VulkanRing>,
    x: Buffer,
    y: Buffer,
    /// (submit time, finished fence) of every job.
    jobs: Vec<(Instant, Fence)>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn run(o: &Options) -> Result<bool, String> {
    let mut config = DeviceConfig::default();
    if o.validation {
        config = config.validation(true);
    }
    let dev = VulkanDevice::with_config(config).map_err(|e| format!("no Vulkan device: {e}"))?;
    println!("device: {} (validation {})", dev.name(), if dev.validation() { "on" } else { "off" });
    let timeout = Duration::from_secs(10);
    let r0 =
        dev.ring(0, SchedulerConfig::new("ring0").timeout(timeout)).map_err(|e| e.to_string())?;
    let r1 =
        dev.ring(0, SchedulerConfig::new("ring1").timeout(timeout)).map_err(|e| e.to_string())?;
    let n = o.size;
    let bytes = u64::from(n) * 4;
    let shared = dev.buffer(bytes).map_err(|e| e.to_string())?;
    shared.write_f32(&vec![0.0; n as usize], timeout).map_err(|e| e.to_string())?;
    let prios = [Priority::High, Priority::Normal, Priority::Low, Priority::Kernel];
    let mut clients = Vec::new();
    for i in 0..o.clients {
        let priority = prios[i % prios.len()];
        let entity = Entity::new(&[&r0, &r1], priority).map_err(|e| e.to_string())?;
        let x = dev.buffer(bytes).map_err(|e| e.to_string())?;
        let y = dev.buffer(bytes).map_err(|e| e.to_string())?;
        y.write_f32(&vec![0.0; n as usize], timeout).map_err(|e| e.to_string())?;
        clients.push(Client { priority, entity, x, y, jobs: Vec::new() });
    }
    let start = Instant::now();
    for round in 1..=o.rounds {
        for c in clients.iter_mut() {
            // x = round; y += 2x; shared += x (shared by every client, on either ring).
            let r = round as f32;
            for job in [fill(&c.x, r, n), saxpy(2.0, &c.x, &c.y, n), saxpy(1.0, &c.x, &shared, n)] {
                let t = Instant::now();
                let f = VulkanDevice::submit(&c.entity, job).map_err(|e| e.to_string())?;
                c.jobs.push((t, f));
            }
        }
    }
    let mut published = 0u64;
    let (mut ok, mut failed) = (0u64, 0u64);
    for c in &clients {
        for (_, f) in &c.jobs {
            published += 1;
            match f.wait_timeout(Duration::from_secs(120)) {
                Ok(()) => ok += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let elapsed = start.elapsed();

    // Verify on the host.
    let rounds = f64::from(o.rounds);
    let mut verified = true;
    let want_y = (rounds * (rounds + 1.0)) as f32; // sum of 2r
    for (i, c) in clients.iter().enumerate() {
        let y = c.y.read_f32(timeout).map_err(|e| e.to_string())?;
        if let Some(bad) = y.iter().position(|v| *v != want_y) {
            println!("client {i}: y[{bad}] = {} but should be {want_y}", y[bad]);
            verified = false;
        }
    }
    let want_shared = (o.clients as f64 * rounds * (rounds + 1.0) / 2.0) as f32;
    let s = shared.read_f32(timeout).map_err(|e| e.to_string())?;
    if let Some(bad) = s.iter().position(|v| *v != want_shared) {
        println!("shared[{bad}] = {} but should be {want_shared}", s[bad]);
        verified = false;
    }

    println!();
    println!("{:<10} {:>8} {:>12} {:>12}", "priority", "jobs", "p50", "p99");
    for prio in Priority::ALL {
        let mut lat: Vec<Duration> = clients
            .iter()
            .filter(|c| c.priority == prio)
            .flat_map(|c| c.jobs.iter())
            .filter_map(|(t, f)| f.timestamp().map(|d| d.saturating_duration_since(*t)))
            .collect();
        if lat.is_empty() {
            continue;
        }
        lat.sort();
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!("{:<10} {:>8} {:>12.2?} {:>12.2?}", format!("{prio:?}"), lat.len(), p50, p99);
    }
    let (s0, s1) = (r0.stats(), r1.stats());
    println!();
    println!(
        "jobs                {published} in {elapsed:.2?} ({:.0} jobs/s)",
        published as f64 / elapsed.as_secs_f64()
    );
    println!("rings               ring0 ran {}, ring1 ran {}", s0.jobs_run, s1.jobs_run);
    println!("fences published    {published}");
    println!("  signalled ok      {ok}");
    println!("  with error        {failed}");
    println!(
        "  sum               {} {}",
        ok + failed,
        if ok + failed == published { "(= published)" } else { "(MISMATCH)" }
    );
    println!("results verified    {}", if verified { "yes" } else { "NO" });
    let validation = gpusched_vulkan::validation_errors();
    let violations = lockdep::violations();
    println!("validation errors   {validation}");
    println!("checker violations  {violations}");
    let pending = clients
        .iter()
        .flat_map(|c| c.jobs.iter())
        .filter(|(_, f)| f.status() == FenceStatus::Pending)
        .count();
    let good = verified
        && failed == 0
        && ok + failed == published
        && validation == 0
        && violations == 0
        && pending == 0;
    drop(clients);
    drop((r0, r1, shared));
    if dev.close(Duration::from_secs(60)).is_err() {
        println!("the device did not go idle in time");
        return Ok(false);
    }
    Ok(good)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gpusched: {e}");
            ExitCode::from(2)
        }
        Ok(Some(o)) => match run(&o) {
            Ok(true) => {
                println!("demo: ok");
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("demo: FAILED");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("gpusched: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
