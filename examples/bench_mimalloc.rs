//! The bench tool (`examples/bench.rs`, same scenarios and options) with
//! mimalloc as the global allocator.
//!
//! The bus moves owned messages between threads, so a message allocated by
//! a publisher is freed by a lane worker; glibc's malloc makes such
//! cross-thread frees take its arena lock. Running the same scenarios under
//! both allocators shows how much of a scenario's cost is the allocator's
//! (the crossbeam baseline runs under the same allocator in each binary).
//!
//! `cargo run --release --example bench_mimalloc -- --transport memory`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "bench.rs"]
mod bench;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bench::main()
}
