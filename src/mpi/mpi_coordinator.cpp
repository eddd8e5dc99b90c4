// The MPI coordinator (library ckpt::mpi). Every collective is a nonblocking MPI call on the
// coordinator's own communicator, completed by polling with short sleeps: a rank that waits for
// the others (a sharded save waits for the slowest rank's data) leaves its core to them and to
// training, where a blocking MPI call would spin on it. Sizes travel first so that
// gather/broadcast carry byte strings of any length below 2 GiB.
#include <ckpt/mpi_coordinator.hpp>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <mutex>
#include <thread>

namespace ckpt {

namespace {

// Coordinators alive that this library initialised MPI for (finalised when it drops to 0).
std::mutex init_mutex;
int owned_alive = 0;
bool we_initialised = false;

error mpi_error(int code, const std::string& what) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(code, text, &len);
  return error(errc::collective_failed,
               what + ": " + std::string(text, static_cast<std::size_t>(len)));
}

// Completes `req`: MPI_Test, then sleeps growing from 20 us to 1 ms between tests (the added
// latency is at most about a millisecond per collective; a sharded save makes four).
int wait_for(MPI_Request& req) {
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    if (int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE); rc != MPI_SUCCESS) return rc;
    if (done) return MPI_SUCCESS;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

// Starts a nonblocking collective (its MPI_I* call as `start`) and waits for it.
template <class Start>
int collective(Start&& start) {
  MPI_Request req = MPI_REQUEST_NULL;
  if (int rc = start(&req); rc != MPI_SUCCESS) return rc;
  return wait_for(req);
}

class mpi_coordinator final : public coordinator {
 public:
  mpi_coordinator(MPI_Comm comm, int rank, int size, bool owned)
      : comm_(comm), rank_(rank), size_(size), owned_(owned) {}
  ~mpi_coordinator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
    if (!owned_) return;
    std::lock_guard l(init_mutex);
    if (--owned_alive == 0 && we_initialised && !finalized) {
      MPI_Finalize();
      we_initialised = false;
    }
  }
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  std::string describe() const override {
    return "mpi rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }

  result<void> barrier() override {
    if (int rc = collective([&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); });
        rc != MPI_SUCCESS) {
      return fail(mpi_error(rc, "MPI_Ibarrier"));
    }
    return success();
  }

  result<std::string> broadcast(std::string bytes, int root) override {
    CKPT_TRY(check_root(root));
    unsigned long long n = bytes.size();
    if (int rc = collective([&](MPI_Request* r) {
          return MPI_Ibcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm_, r);
        });
        rc != MPI_SUCCESS) {
      return fail(mpi_error(rc, "MPI_Ibcast (size)"));
    }
    if (n > INT_MAX) {
      return fail(errc::limit_exceeded, "broadcast of " + std::to_string(n) +
                                            " bytes: more than a coordinator message may hold");
    }
    if (rank_ != root) bytes.assign(static_cast<std::size_t>(n), '\0');
    if (n > 0) {
      if (int rc = collective([&](MPI_Request* r) {
            return MPI_Ibcast(bytes.data(), static_cast<int>(n), MPI_BYTE, root, comm_, r);
          });
          rc != MPI_SUCCESS) {
        return fail(mpi_error(rc, "MPI_Ibcast"));
      }
    }
    return bytes;
  }

  result<std::vector<std::string>> gather(std::string bytes, int root) override {
    CKPT_TRY(check_root(root));
    // Sizes are gathered even when this rank's is too large, so that every rank reaches the
    // same verdict and none is left waiting in the second collective.
    long long mine = bytes.size() > INT_MAX ? -1 : static_cast<long long>(bytes.size());
    std::vector<long long> sizes(rank_ == root ? static_cast<std::size_t>(size_) : 0);
    if (int rc = collective([&](MPI_Request* r) {
          return MPI_Igather(&mine, 1, MPI_LONG_LONG, sizes.data(), 1, MPI_LONG_LONG, root, comm_,
                             r);
        });
        rc != MPI_SUCCESS) {
      return fail(mpi_error(rc, "MPI_Igather (sizes)"));
    }
    int ok = 1;
    long long total = 0;
    std::vector<int> counts, displs;
    if (rank_ == root) {
      for (long long s : sizes) {
        if (s < 0 || total + s > INT_MAX) ok = 0;
        counts.push_back(static_cast<int>(s < 0 ? 0 : s));
        displs.push_back(static_cast<int>(total > INT_MAX ? 0 : total));
        total += s < 0 ? 0 : s;
      }
    }
    if (int rc =
            collective([&](MPI_Request* r) { return MPI_Ibcast(&ok, 1, MPI_INT, root, comm_, r); });
        rc != MPI_SUCCESS) {
      return fail(mpi_error(rc, "MPI_Ibcast (gather verdict)"));
    }
    if (!ok) {
      return fail(errc::limit_exceeded,
                  "gather: the ranks' messages exceed 2 GiB together, more than one coordinator "
                  "message may hold");
    }
    std::string all(rank_ == root ? static_cast<std::size_t>(total) : 0, '\0');
    if (int rc = collective([&](MPI_Request* r) {
          return MPI_Igatherv(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, all.data(),
                              counts.data(), displs.data(), MPI_BYTE, root, comm_, r);
        });
        rc != MPI_SUCCESS) {
      return fail(mpi_error(rc, "MPI_Igatherv"));
    }
    std::vector<std::string> out;
    if (rank_ == root) {
      for (int r = 0; r < size_; ++r)
        out.push_back(
            all.substr(static_cast<std::size_t>(displs[r]), static_cast<std::size_t>(counts[r])));
    }
    return out;
  }

 private:
  result<void> check_root(int root) const {
    if (root < 0 || root >= size_) {
      return fail(errc::invalid_argument,
                  "collective root " + std::to_string(root) + " is not a rank of " + describe());
    }
    return success();
  }
  MPI_Comm comm_;
  int rank_;
  int size_;
  bool owned_;
};

}  // namespace

result<std::shared_ptr<coordinator>> make_mpi_coordinator(int* argc, char*** argv) {
  bool owned = false;
  {
    std::lock_guard l(init_mutex);
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized) return fail(errc::invalid_argument, "MPI was already finalised");
    int provided = 0;
    if (!initialized) {
      if (int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided); rc != MPI_SUCCESS) {
        return fail(mpi_error(rc, "MPI_Init_thread"));
      }
      we_initialised = true;
    } else {
      MPI_Query_thread(&provided);
    }
    owned = we_initialised;
    if (provided < MPI_THREAD_SERIALIZED) {
      return fail(errc::invalid_argument,
                  "MPI provides thread level " + std::to_string(provided) +
                      ": a sharded save needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE");
    }
    if (owned) ++owned_alive;
  }
  MPI_Comm comm = MPI_COMM_NULL;
  if (int rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm); rc != MPI_SUCCESS) {
    return fail(mpi_error(rc, "MPI_Comm_dup"));
  }
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  return std::shared_ptr<coordinator>(std::make_shared<mpi_coordinator>(comm, rank, size, owned));
}

}  // namespace ckpt
