//! The `wgagent` binary: everything is in the library's [`wgagent::cli`].

fn main() -> std::process::ExitCode {
    wgagent::cli::main()
}
