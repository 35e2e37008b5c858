fn main() {
    let b = include_bytes!(concat!(env!("OUT_DIR"), "/tcpmon"));
    println!("{}", b.len());
}
