// The raw device baseline: the same bytes written (then fsynced) and read back with plain
// O_DIRECT through the io engine (io_uring), `depth` blocks of `block` bytes in flight. Used by
// `ckpt-perf io` and, in the same run and alternated with our runs, by every save/load figure.
#pragma once

#include "pipeline/extents.hpp"

#include <ckpt/buffer.hpp>
#include <ckpt/error.hpp>
#include <ckpt/io.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ckpt::perf {

/// One sequential pass over a file, shared by `depth` workers on one thread.
struct io_phase {
  const io::file* f = nullptr;
  std::uint64_t size = 0;
  std::uint64_t block = 0;
  std::uint64_t next = 0;
  bool write = true;
  std::string error{};
};

/// Runs one worker per buffer over the whole of `p`; returns the elapsed seconds.
double run_io_phase(io::engine& e, io_phase& p, std::vector<aligned_buffer>& buffers);
/// The same over several passes at once, the buffers dealt out in turn.
double run_io_phases(io::engine& e, const std::vector<io_phase*>& phases,
                     std::vector<aligned_buffer>& buffers);
/// Fills `b` with pseudo-random bytes (incompressible).
void fill_random(aligned_buffer& b, std::uint64_t seed);
/// Drops the file's cached pages (fdatasync + fadvise DONTNEED; with `system_wide` as root also
/// /proc/sys/vm/drop_caches); returns what was done, for the report.
std::string drop_file_cache(const std::string& path, bool system_wide);

/// Blocks of 4 MiB in flight in every raw and fio baseline: the save and load pipelines keep
/// pipeline::stream_window (128 MiB) in flight, and a baseline with less under-measures a disk
/// that rewards depth (this project's virtio disk reads at 16 in flight about half as fast as
/// at 32). Before 2026-12-02 the baselines ran 16 deep.
inline constexpr unsigned baseline_depth = 32;
static_assert(std::uint64_t{baseline_depth} * (4ull << 20) == pipeline::stream_window);

struct raw_options {
  std::uint64_t block = 4ull << 20;
  unsigned depth = baseline_depth;
  bool read = true;  ///< false: write + fsync only
};

struct raw_figures {
  double write_gibps = 0;  ///< bytes / (write + fsync)
  double read_gibps = 0;   ///< bytes / cold read (0 when not read)
  double write_s = 0, fsync_s = 0, read_s = 0;
  bool direct = true;
};

/// Writes `bytes` (rounded up to 4 KiB) to a fresh file in `dir` (laid out with fallocate,
/// untimed, as fio does), fsyncs, drops its cache, reads it back, deletes it.
result<raw_figures> raw_write_read_gibps(const std::string& dir, std::uint64_t bytes,
                                         const raw_options& o = {});

/// Reads `paths` (all at once, `depth` blocks in flight in all) with O_DIRECT after dropping
/// their cached pages (and, as root, the whole page cache): the load baseline over a
/// checkpoint's own data files. GiB/s.
result<double> raw_read_files_gibps(const std::vector<std::string>& paths,
                                    const raw_options& o = {});

}  // namespace ckpt::perf
