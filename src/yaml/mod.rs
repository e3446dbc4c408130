//! YAML with source spans: parsing into [`Node`] trees, merging them, and
//! decoding them into typed shapes with every error located.

mod de;
mod node;

pub use de::{DeError, NodeDe, decode, decode_one, decode_partial};
pub use node::{Key, Node, NodeKind, parse};
