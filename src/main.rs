//! The `wgagent` binary: everything is in the library's [`wgagent::cli`].

fn main() -> std::process::ExitCode {
    // First: a process started as a command's supervisor becomes it here, before any thread
    // or runtime exists (see `wgagent::proc::run_supervisor_if_asked`).
    wgagent::proc::run_supervisor_if_asked();
    wgagent::cli::main()
}
