"""Layer 2, dedup libraries: shingling, vectorised MinHash signatures and banding, near-duplicate
search with Jaccard verification, and the persistent cross-partition index (first landed keeps)."""
