// ckpt/mpi_coordinator.hpp - the coordinator over MPI (library target ckpt::mpi; OpenMPI from
// Debian's libopenmpi-dev). Link `ckpt::mpi` to use it; libckpt itself never links MPI, and this
// header does not include <mpi.h>.
#pragma once

#include <ckpt/coordinator.hpp>
#include <ckpt/error.hpp>

#include <memory>

namespace ckpt {

/// A coordinator over all processes of the MPI job (MPI_COMM_WORLD), on a duplicate of that
/// communicator so that its messages never meet the application's, with MPI_ERRORS_RETURN so
/// that MPI failures come back as `errc::collective_failed`.
///
/// MPI initialisation: when MPI is not initialised yet, this calls MPI_Init_thread asking for
/// MPI_THREAD_MULTIPLE (a sharded save runs its collectives on a thread of its own, while the
/// application may use MPI on its threads) and finalises MPI when the last coordinator made by
/// this function is destroyed. When the application initialised MPI itself it also finalises
/// it, after destroying its coordinators; it must have asked for MPI_THREAD_MULTIPLE, or for
/// MPI_THREAD_SERIALIZED if it never calls MPI while a sharded save is in flight. A lower
/// thread level is `errc::invalid_argument`.
///
/// @param argc, argv passed to MPI_Init_thread when it is called here (may be null).
result<std::shared_ptr<coordinator>> make_mpi_coordinator(int* argc = nullptr,
                                                          char*** argv = nullptr);

}  // namespace ckpt
