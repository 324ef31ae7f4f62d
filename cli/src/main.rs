//! The `tofu` command line (work in progress).

fn main() {
    eprintln!("tofu: not built yet");
    std::process::exit(2);
}
