fn main() -> std::process::ExitCode {
    wgagent::cli::main()
}
