// ckpt/coordinator.hpp - the processes of a multi-host job and the few collective operations a
// sharded checkpoint needs: rank, size, barrier, broadcast and gather of small byte strings.
//
// ckpt does not run a cluster protocol of its own. Two implementations ship:
//  - make_local_coordinator(): one process alone (rank 0 of 1), and make_local_group(n): n
//    coordinators connected in memory, each used from its own thread (tests and single-process
//    simulations of a multi-host job);
//  - make_mpi_coordinator() (ckpt/mpi_coordinator.hpp, library target ckpt::mpi): MPI, on a
//    communicator of its own. This header does not include <mpi.h>, and libckpt does not link
//    MPI.
//
// Collectives follow MPI's rules: every rank calls the same collectives in the same order, and
// a collective returns once this rank's part is done. They block the calling thread: never call
// them from one of a ckpt::runtime's threads. A coordinator is used by one thread at a time
// (sharded saves take turns through `collective_turn`, in the order they were started).
//
// Failure: a rank that dies takes the job with it (mpirun aborts the others); a collective that
// fails returns an error (errc::collective_failed, naming the MPI error) rather than throwing.
#pragma once

#include <ckpt/error.hpp>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt {

class coordinator {
 public:
  coordinator() = default;
  coordinator(const coordinator&) = delete;
  coordinator& operator=(const coordinator&) = delete;
  virtual ~coordinator() = default;

  /// This process's rank in [0, size()).
  virtual int rank() const noexcept = 0;
  /// The number of processes of the job (>= 1).
  virtual int size() const noexcept = 0;
  /// A short description for messages ("mpi rank 2 of 4", "local rank 0 of 1").
  virtual std::string describe() const;

  /// Returns once every rank has entered the barrier.
  virtual result<void> barrier() = 0;
  /// Rank `root`'s `bytes` on every rank (the argument is ignored on the other ranks).
  virtual result<std::string> broadcast(std::string bytes, int root = 0) = 0;
  /// On `root`: every rank's `bytes`, indexed by rank. On the other ranks: an empty vector.
  virtual result<std::vector<std::string>> gather(std::string bytes, int root = 0) = 0;

  /// Turns for sharded saves that run their collectives on their own threads: `take()` (in
  /// program order, on the thread that starts the save) hands out tickets 0, 1, 2, ...;
  /// `wait(t)` blocks until every earlier ticket was `done`. Since every rank starts its saves
  /// in the same order, the collectives of concurrent saves never interleave differently on
  /// different ranks.
  class collective_turn {
   public:
    std::uint64_t take();
    void wait(std::uint64_t ticket);
    void done(std::uint64_t ticket);

   private:
    std::mutex m_;
    std::condition_variable cv_;
    std::uint64_t next_ = 0;
    std::uint64_t serving_ = 0;
  };
  collective_turn& turns() noexcept { return turns_; }

 private:
  collective_turn turns_;
};

/// A coordinator for a job of one process (rank 0 of 1): the collectives return at once.
std::shared_ptr<coordinator> make_local_coordinator();

/// `n` coordinators of one in-memory job, ranks 0 .. n-1; element r is rank r. Each must be used
/// from its own thread (a collective blocks until every rank called it). Thread-safe across
/// the group. Meant for tests and for simulating a multi-host job in one process.
std::vector<std::shared_ptr<coordinator>> make_local_group(int n);

/// Every rank's `local` outcome combined: success on every rank when all succeeded, otherwise
/// on every rank the error of the lowest failing rank, its message prefixed with "rank R: "
/// (and the number of other ranks that failed). A failing collective is returned as such.
/// Collective: every rank must call it.
result<void> agree(coordinator& c, const result<void>& local);

}  // namespace ckpt
