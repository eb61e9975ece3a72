fn main() {
    println!("wgagent {}", env!("CARGO_PKG_VERSION"));
}
