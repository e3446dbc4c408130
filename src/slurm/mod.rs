//! Slurm: the hosts of an allocation.

pub mod alloc;
pub mod hostlist;
