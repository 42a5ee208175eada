//! The `guest-image` command.

fn main() {
    eprintln!("guest-image: not implemented yet");
    std::process::exit(2);
}
