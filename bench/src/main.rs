//! Side-by-side benchmarks (work in progress).

fn main() {
    eprintln!("tofu-bench: not built yet");
    std::process::exit(2);
}
