//! walrus-node: the one Walrus binary on every machine; the shared config names each
//! host's roles (controller, reporter, replicator, director).

fn main() {
    println!(
        "walrus-node {}: the node is not built yet; `walrus-node demo` will start a whole \
         local deployment on loopback.",
        env!("CARGO_PKG_VERSION")
    );
}
