// The fio baseline: the same byte count written/read sequentially with O_DIRECT io_uring,
// bs 4M, iodepth 32 (write with end_fsync), in the same folder, in the same run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ckpt::perf {

/// True when a `fio` binary is on PATH.
bool have_fio();
/// GiB/s of `fio --rw=write|read` over `bytes` in `dir`, or nullopt when fio is missing or
/// fails (`why` says which). The file is removed afterwards (a read lays it out first). With
/// `numjobs` > 1: that many jobs at once, each over its own file of `bytes`, and the aggregate
/// (every job's bytes over the slowest job's time, end_fsync included).
std::optional<double> fio_gibps(const std::string& dir, std::uint64_t bytes, bool write,
                                std::string* why = nullptr, int numjobs = 1);
/// Drops the page cache when running as root; returns how ("drop_caches", or why not).
std::string drop_page_cache();

}  // namespace ckpt::perf
