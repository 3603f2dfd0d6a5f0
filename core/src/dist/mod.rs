//! Data-parallel training on PyTorch's own distributed engine (c10d: a TCP rendezvous store and a Gloo
//! process group), reached through a small C++ shim built with `cxx`. Launch configuration comes from the
//! variables `torchrun` sets: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

// SAFETY (the bridge): the C++ functions below take a tensor's data pointer; each Rust caller passes the
// pointer of a contiguous tensor it owns for the duration of the call (see the call sites).
#[cxx::bridge(namespace = "spn_dist")]
mod ffi {
    unsafe extern "C++" {
        include!("spn/src/dist/shim.h");
        type Group;
        fn new_group(
            host: &str,
            port: u16,
            rank: i32,
            world: i32,
            timeout_ms: i64,
        ) -> Result<UniquePtr<Group>>;
        // SAFETY (for callers): `tensor` is a live `at::Tensor*` (tch's `as_mut_ptr`) that no other thread
        // touches until the call returns; the shim only reads and writes that tensor's storage in place.
        unsafe fn allreduce_sum(group: Pin<&mut Group>, tensor: *mut u8) -> Result<()>;
        unsafe fn broadcast(group: Pin<&mut Group>, tensor: *mut u8, root: i32) -> Result<()>;
    }
}

/// Gradients are all-reduced in buckets of at most this many floats (100 MB), like DDP.
const BUCKET: i64 = 25 << 20;

pub struct Dist {
    group: cxx::UniquePtr<ffi::Group>,
    pub rank: usize,
    pub world: usize,
}

fn env<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::input(format!("{name}={v} is not valid"))),
        Err(_) => Ok(None),
    }
}

fn comm_err(what: &str, rank: usize, e: cxx::Exception) -> Error {
    Error::Other(format!(
        "distributed {what} failed on rank {rank}: {} (did another rank stop or die?)",
        e.what().lines().next().unwrap_or("")
    ))
}

impl Dist {
    /// Joins the process group described by the environment; `None` when WORLD_SIZE is unset or 1.
    pub fn from_env() -> Result<Option<Dist>> {
        let world: usize = env("WORLD_SIZE")?.unwrap_or(1);
        if world <= 1 {
            return Ok(None);
        }
        let rank: usize =
            env("RANK")?.ok_or_else(|| Error::input("WORLD_SIZE is set but RANK is not"))?;
        if rank >= world {
            return Err(Error::input(format!(
                "RANK {rank} must be below WORLD_SIZE {world}"
            )));
        }
        let host = std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
        let port: u16 = env("MASTER_PORT")?.unwrap_or(29500);
        let timeout_ms: i64 = env("SPN_DIST_TIMEOUT_MS")?.unwrap_or(300_000);
        log::info!("rank {rank} of {world} joining {host}:{port}");
        let group = ffi::new_group(&host, port, rank as i32, world as i32, timeout_ms)
            .map_err(|e| comm_err("rendezvous", rank, e))?;
        Ok(Some(Dist { group, rank, world }))
    }

    /// Replaces every tensor by the mean over ranks (flattened into buckets, one all-reduce per bucket).
    pub fn allreduce_mean(&mut self, tensors: &[Tensor]) -> Result<()> {
        let mut start = 0;
        while start < tensors.len() {
            let mut end = start;
            let mut n = 0;
            while end < tensors.len() && (n == 0 || n + tensors[end].numel() as i64 <= BUCKET) {
                n += tensors[end].numel() as i64;
                end += 1;
            }
            let flat: Vec<Tensor> = tensors[start..end]
                .iter()
                .map(|t| t.f_reshape([-1]))
                .collect::<Result<_, _>>()?;
            let mut bucket = Tensor::f_cat(&flat, 0)?.f_to_kind(Kind::Float)?;
            // SAFETY: `bucket` is a contiguous float tensor this function owns for the call; the shim reads and
            // writes exactly its numel floats through the pointer and keeps no copy of it.
            unsafe { ffi::allreduce_sum(self.group.pin_mut(), bucket.as_mut_ptr() as *mut u8) }
                .map_err(|e| comm_err("all-reduce", self.rank, e))?;
            let _ = bucket.f_div_scalar_(self.world as f64)?;
            let mut off = 0;
            for t in &tensors[start..end] {
                let k = t.numel() as i64;
                let mut t = t.shallow_clone();
                t.f_copy_(&bucket.f_narrow(0, off, k)?.f_view(t.size().as_slice())?)?;
                off += k;
            }
            start = end;
        }
        Ok(())
    }

    /// Copies rank `root`'s values of every tensor to all ranks.
    pub fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()> {
        for t in tensors {
            let mut c = t.f_detach()?.f_contiguous()?;
            // SAFETY: `c` is a contiguous tensor owned here for the call; the shim writes exactly its numel
            // elements through the pointer and keeps no copy of it.
            unsafe { ffi::broadcast(self.group.pin_mut(), c.as_mut_ptr() as *mut u8, root as i32) }
                .map_err(|e| comm_err("broadcast", self.rank, e))?;
            let mut t = t.shallow_clone();
            tch::no_grad(|| t.f_copy_(&c))?;
        }
        Ok(())
    }
}
