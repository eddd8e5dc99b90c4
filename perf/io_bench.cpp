// ckpt-perf io: sequential O_DIRECT write + fsync, then a cold read, through the io engine.
//
//   ckpt-perf io --dir DIR --size BYTES [--block BYTES=4M] [--depth N=32]
//                [--backend uring|threads] [--drop-caches] [--json]
//
// Method: `depth` workers each own one aligned buffer of `block` bytes (filled with
// pseudo-random data before the clock starts) and take the next block offset in turn, so
// `depth` writes of `block` bytes are in flight at once. The file is first laid out with
// fallocate (untimed, as fio does by default; --no-fallocate skips it). One fsync at the end is
// part of the write time. The file is then closed, its page cache dropped (posix_fadvise DONTNEED;
// with
// --drop-caches as root also /proc/sys/vm/drop_caches), and read back the same way. The file is
// deleted afterwards.
#include "perf.hpp"
#include "raw_io.hpp"

#include <ckpt/buffer.hpp>
#include <ckpt/io.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using ckpt::aligned_buffer;
using ckpt::io::engine;
using ckpt::perf::fill_random;
using ckpt::perf::io_phase;

struct options {
  std::string dir;
  std::uint64_t size = 0;
  std::uint64_t block = 4 << 20;
  unsigned depth = ckpt::perf::baseline_depth;
  ckpt::io::backend_kind backend = ckpt::io::backend_kind::automatic;
  bool drop_caches = false;
  bool json = false;
  bool fallocate = true;
  bool keep = false;       // leave the file behind
  bool read_only = false;  // skip the write phase: read an existing --file
  std::string file;        // explicit file name instead of DIR/ckpt-perf-io.PID.dat
};

int usage() {
  std::fprintf(stderr,
               "usage: ckpt-perf io --dir DIR --size BYTES [--block BYTES=4M] [--depth N=32]\n"
               "                    [--backend uring|threads] [--drop-caches] [--no-fallocate]\n"
               "                    [--file PATH] [--keep] [--read-only] [--json]\n");
  return 2;
}

double gibps(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / double(1 << 30) : 0.0;
}

int io_main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--json") {
      o.json = true;
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--read-only") {
      o.read_only = true;
    } else if (a == "--file") {
      const char* v = value();
      if (!v) return usage();
      o.file = v;
    } else if (a == "--no-fallocate") {
      o.fallocate = false;
    } else if (a == "--drop-caches") {
      o.drop_caches = true;
    } else if (a == "--dir") {
      const char* v = value();
      if (!v) return usage();
      o.dir = v;
    } else if (a == "--size" || a == "--block") {
      const char* v = value();
      auto n = v ? ckpt::perf::parse_bytes(v) : std::nullopt;
      if (!n) return usage();
      (a == "--size" ? o.size : o.block) = *n;
    } else if (a == "--depth") {
      const char* v = value();
      if (!v) return usage();
      o.depth = static_cast<unsigned>(std::strtoul(v, nullptr, 10));
    } else if (a == "--backend") {
      const char* v = value();
      if (!v) return usage();
      std::string_view b = v;
      if (b == "uring") {
        o.backend = ckpt::io::backend_kind::uring;
      } else if (b == "threads") {
        o.backend = ckpt::io::backend_kind::threads;
      } else if (b != "auto") {
        return usage();
      }
    } else {
      std::fprintf(stderr, "ckpt-perf io: unknown option %s\n", argv[i]);
      return usage();
    }
  }
  if (!o.file.empty() && o.dir.empty()) o.dir = ".";
  if (o.read_only && o.file.empty()) {
    std::fprintf(stderr, "ckpt-perf io: --read-only needs --file\n");
    return usage();
  }
  if (o.dir.empty() || o.size == 0 || o.depth == 0 || o.block == 0 || o.block % 4096 != 0 ||
      o.size % 4096 != 0) {
    std::fprintf(stderr,
                 "ckpt-perf io: --dir and --size are required; size and block must be "
                 "multiples of 4096, depth > 0\n");
    return usage();
  }

  auto created = engine::create(
      {.backend = o.backend, .queue_depth = o.depth, .threads = std::max(4u, o.depth)});
  if (!created) {
    std::fprintf(stderr, "ckpt-perf io: %s\n", created.error().what().c_str());
    return 1;
  }
  auto& e = *created.value();
  const std::string path =
      o.file.empty() ? o.dir + "/ckpt-perf-io." + std::to_string(::getpid()) + ".dat" : o.file;
  const bool remove_file = !o.keep && !o.read_only;

  // Buffers and data: not timed.
  std::vector<aligned_buffer> buffers;
  const unsigned nbuf =
      static_cast<unsigned>(std::min<std::uint64_t>(o.depth, (o.size + o.block - 1) / o.block));
  for (unsigned i = 0; i < nbuf; ++i) {
    buffers.emplace_back(static_cast<std::size_t>(o.block));
    fill_random(buffers.back(), 0x5eed + i);
  }

  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "ckpt-perf io: %s\n", what.c_str());
    if (remove_file) ::unlink(path.c_str());
    return 1;
  };

  // Write + fsync.
  double write_s = 0;
  double fsync_s = 0;
  bool direct = true;
  if (!o.read_only) {
    auto fw =
        ckpt::perf::run(e.open(AT_FDCWD, path, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0644));
    if (!fw) return fail(fw.error().what());
    direct = fw.value().direct;
    if (o.fallocate) {
      // Lay the file out first, untimed, as fio does by default (fallocate=native).
      auto laid = ckpt::perf::run(e.fallocate(fw.value(), 0, 0, o.size));
      if (!laid) return fail(laid.error().what());
    }
    io_phase w{.f = &fw.value(), .size = o.size, .block = o.block, .write = true};
    write_s = ckpt::perf::run_io_phase(e, w, buffers);
    auto t0 = std::chrono::steady_clock::now();
    auto synced = ckpt::perf::run(e.fsync(fw.value()));
    fsync_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    (void)ckpt::perf::run(e.close(fw.value()));
    if (!w.error.empty()) return fail(w.error);
    if (!synced) return fail(synced.error().what());
  }

  // Cold read.
  std::string cache = ckpt::perf::drop_file_cache(path, o.drop_caches);
  auto fr = ckpt::perf::run(e.open(AT_FDCWD, path, O_RDONLY | O_DIRECT));
  if (!fr) return fail(fr.error().what());
  direct = direct && fr.value().direct;
  io_phase r{.f = &fr.value(), .size = o.size, .block = o.block, .write = false};
  double read_s = ckpt::perf::run_io_phase(e, r, buffers);
  (void)ckpt::perf::run(e.close(fr.value()));
  if (remove_file) ::unlink(path.c_str());
  if (!r.error.empty()) return fail(r.error);

  const double wg = gibps(o.size, write_s + fsync_s);
  const double rg = gibps(o.size, read_s);
  if (o.json) {
    std::printf(
        "{\"backend\":\"%s\",\"bytes\":%llu,\"block\":%llu,\"depth\":%u,\"direct\":%s,"
        "\"write_gibps\":%.4f,\"read_gibps\":%.4f,\"write_s\":%.4f,\"fsync_s\":%.4f,"
        "\"read_s\":%.4f,\"fallocate\":%s,\"cache_drop\":\"%s\"}\n",
        std::string(e.backend_name()).c_str(), static_cast<unsigned long long>(o.size),
        static_cast<unsigned long long>(o.block), o.depth, direct ? "true" : "false", wg, rg,
        write_s, fsync_s, read_s, o.fallocate ? "true" : "false", cache.c_str());
  } else {
    std::printf(
        "method: sequential %s of %.2f GiB in %llu KiB blocks, %u in flight, O_DIRECT %s,"
        " backend %s\n",
        "write+fsync then read", static_cast<double>(o.size) / double(1 << 30),
        static_cast<unsigned long long>(o.block >> 10), o.depth, direct ? "yes" : "no",
        std::string(e.backend_name()).c_str());
    std::printf("write: %.3f GiB/s (%.3f s writing + %.3f s fsync)\n", wg, write_s, fsync_s);
    std::printf("read:  %.3f GiB/s (%.3f s, cache dropped: %s)\n", rg, read_s, cache.c_str());
  }
  return 0;
}

ckpt::perf::register_command reg_io("io", "sequential O_DIRECT write/fsync/read throughput",
                                    io_main);

}  // namespace
