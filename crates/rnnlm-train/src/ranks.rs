//! A run across processes: the ranks of an MPI job (`mpirun -n N rnnlm train ...`, or Slurm's
//! `srun`), each running a contiguous block of every minibatch's parallel streams, with one
//! all-reduce of a flat buffer per step. Without the `mpi` feature, or with one rank, the run is
//! one process and every collective is the identity.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::error::TrainError;

/// The processes a run spans, and the collectives training needs of them.
pub trait Ranks: Send + Sync {
    /// This process's rank, `0..size()`; rank 0 writes the artifacts and prints.
    fn rank(&self) -> usize;

    /// How many processes run.
    fn size(&self) -> usize;

    /// Sums `values` element-wise over every rank, in place: every rank ends with the same
    /// values.
    fn sum(&self, values: &mut [f32]);

    /// [`Ranks::sum`] in double precision (metrics: summed losses and token counts).
    fn sum_f64(&self, values: &mut [f64]);

    /// Waits until every rank gets here.
    fn barrier(&self);

    /// Ends every rank of the run (after this one printed why), with `code`.
    fn abort(&self, code: i32) -> !;

    /// Whether this is the rank that writes files and prints.
    fn is_writer(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: rank 0 of 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct OneProcess;

impl Ranks for OneProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn sum(&self, _values: &mut [f32]) {}

    fn sum_f64(&self, _values: &mut [f64]) {}

    fn barrier(&self) {}

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// How many processes the launcher started, read from what `mpirun` (Open MPI, MPICH's Hydra,
/// PMIx) or Slurm's `srun` put in the environment: `None` when not under one, or with one.
pub fn launched_ranks() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS",
    ]
    .iter()
    .filter_map(|name| std::env::var(name).ok()?.trim().parse::<usize>().ok())
    .find(|&n| n > 1)
}

/// An error for a run that a launcher started as several ranks, in a build without MPI:
/// each process would train alone and all would write the same artifacts.
pub fn require_mpi_build(ranks: usize) -> TrainError {
    TrainError::NotAnMpiBuild { ranks }
}

#[cfg(feature = "mpi")]
pub use with_mpi::MpiRanks;

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::sync::Mutex;

    use mpi::Threading;
    use mpi::collective::{CommunicatorCollectives, SystemOperation};
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};

    use super::Ranks;
    use crate::error::TrainError;

    /// The ranks of an MPI job (`MPI_COMM_WORLD`). MPI is initialised with
    /// `MPI_THREAD_SERIALIZED` (checked), and every call goes through one mutex: calls may come
    /// from any thread (burn-train's), never two at once, which is what that level allows.
    pub struct MpiRanks {
        world: Mutex<SimpleCommunicator>,
        rank: usize,
        size: usize,
        // Finalises MPI when dropped: kept for the life of the run.
        _universe: Universe,
    }

    // SAFETY: the communicator is only used under the mutex (one call at a time, from whichever
    // thread holds it), and `new` refused any thread level below MPI_THREAD_SERIALIZED, which
    // permits exactly that; the universe is only dropped, once, with the value.
    unsafe impl Send for MpiRanks {}
    // SAFETY: as above: shared references reach the communicator only through the mutex.
    unsafe impl Sync for MpiRanks {}

    impl MpiRanks {
        /// Initialises MPI. Call it once per process, before training.
        ///
        /// # Errors
        /// MPI was already initialised, or the library does not allow serialised calls from
        /// several threads.
        pub fn new() -> Result<Self, TrainError> {
            let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
                .ok_or_else(|| TrainError::Mpi {
                    reason: "MPI was already initialised in this process".to_owned(),
                })?;
            if level < Threading::Serialized {
                return Err(TrainError::Mpi {
                    reason: format!(
                        "this MPI library gives thread support {level:?}; training calls MPI \
                         from burn-train's threads and needs MPI_THREAD_SERIALIZED (an Open MPI \
                         or MPICH built with thread support)"
                    ),
                });
            }
            let world = universe.world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            Ok(Self {
                world: Mutex::new(world),
                rank,
                size,
                _universe: universe,
            })
        }
    }

    impl Ranks for MpiRanks {
        fn rank(&self) -> usize {
            self.rank
        }

        fn size(&self) -> usize {
            self.size
        }

        fn sum(&self, values: &mut [f32]) {
            let world = self.world.lock().expect("the MPI lock");
            let send = values.to_vec();
            world.all_reduce_into(&send[..], values, SystemOperation::sum());
        }

        fn sum_f64(&self, values: &mut [f64]) {
            let world = self.world.lock().expect("the MPI lock");
            let send = values.to_vec();
            world.all_reduce_into(&send[..], values, SystemOperation::sum());
        }

        fn barrier(&self) {
            self.world.lock().expect("the MPI lock").barrier();
        }

        fn abort(&self, code: i32) -> ! {
            // A poisoned lock still holds the communicator: aborting is all that is left.
            let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
            world.abort(code)
        }
    }
}

/// The block of a minibatch's `rows` that `rank` of `size` runs: contiguous, the sizes differing
/// by at most one, as data parallelism on devices cuts them.
pub(crate) fn rows_of(rows: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    crate::parallel::DataParallel::shard_rows(rows, size)[rank].clone()
}

/// The one all-reduce of a step: every parameter's gradient, scaled by this rank's `share` of
/// the minibatch's rows (so the sum is the gradient of the whole minibatch's mean loss), then
/// `extra` (the step's loss and stop flags), as one flat buffer summed over the ranks. The
/// gradients come back summed, on the devices they were on.
pub(crate) fn sum_step<M: Module>(
    ranks: &dyn Ranks,
    model: &M,
    grads: &mut GradientsParams,
    share: f32,
    extra: &mut [f32],
) {
    let mut flat = Flatten {
        grads,
        share,
        buffer: Vec::new(),
        layout: Vec::new(),
    };
    model.visit(&mut flat);
    let Flatten {
        mut buffer, layout, ..
    } = flat;
    let start = buffer.len();
    buffer.extend_from_slice(extra);
    ranks.sum(&mut buffer);
    extra.copy_from_slice(&buffer[start..]);
    model.visit(&mut Unflatten {
        grads,
        buffer: &buffer,
        layout: &layout,
        next: 0,
        offset: 0,
    });
}

/// Where a parameter's gradient sits in the flat buffer: its length and its device.
struct Slot {
    len: usize,
    device: Device,
}

struct Flatten<'a> {
    grads: &'a mut GradientsParams,
    share: f32,
    buffer: Vec<f32>,
    layout: Vec<Option<Slot>>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // Every rank's model has the same parameters with the same gradients present (one
        // model, one loss), so the buffers line up.
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            self.layout.push(None);
            return;
        };
        let device = grad.device();
        let values = grad
            .mul_scalar(self.share)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 gradients");
        self.layout.push(Some(Slot {
            len: values.len(),
            device,
        }));
        self.buffer.extend_from_slice(&values);
    }
}

struct Unflatten<'a> {
    grads: &'a mut GradientsParams,
    buffer: &'a [f32],
    layout: &'a [Option<Slot>],
    next: usize,
    offset: usize,
}

impl ModuleVisitor for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let slot = &self.layout[self.next];
        self.next += 1;
        let Some(slot) = slot else { return };
        let values = self.buffer[self.offset..self.offset + slot.len].to_vec();
        self.offset += slot.len;
        let shape = param.val().dims();
        let grad = Tensor::<D>::from_data(TensorData::new(values, shape), &slot.device);
        self.grads.register::<D>(param.id, grad);
    }
}

/// A state of this rank's rows `[layers, rows.len(), hidden]` (row-major) placed into the full
/// minibatch's `[layers, batch, hidden]`, summed over the ranks: every rank gets the whole state.
pub(crate) fn gather_rows(
    ranks: &dyn Ranks,
    local: &[f32],
    shape: [usize; 3],
    rows: std::ops::Range<usize>,
    batch: usize,
) -> Vec<f32> {
    let [layers, mine, hidden] = shape;
    debug_assert_eq!(mine, rows.len());
    let mut full = vec![0.0; layers * batch * hidden];
    for layer in 0..layers {
        let from = &local[layer * mine * hidden..(layer + 1) * mine * hidden];
        let at = (layer * batch + rows.start) * hidden;
        full[at..at + mine * hidden].copy_from_slice(from);
    }
    ranks.sum(&mut full);
    full
}
