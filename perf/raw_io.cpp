#include "raw_io.hpp"

#include "perf.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>

namespace ckpt::perf {
namespace {

namespace asio = boost::asio;

asio::awaitable<void> worker(io::engine& e, io_phase& p, aligned_buffer& buf) {
  while (p.error.empty() && p.next < p.size) {
    std::uint64_t offset = p.next;
    std::size_t len = static_cast<std::size_t>(std::min(p.block, p.size - offset));
    p.next += len;
    if (p.write) {
      auto r = co_await e.write(*p.f, buf.span().first(len), offset);
      if (!r) p.error = r.error().what();
    } else {
      auto r = co_await e.read(*p.f, buf.span().first(len), offset);
      if (!r) {
        p.error = r.error().what();
      } else if (r.value() != len) {
        p.error = "short read at offset " + std::to_string(offset);
      }
    }
  }
}

}  // namespace

double run_io_phase(io::engine& e, io_phase& p, std::vector<aligned_buffer>& buffers) {
  std::vector<io_phase*> one{&p};
  return run_io_phases(e, one, buffers);
}

double run_io_phases(io::engine& e, const std::vector<io_phase*>& phases,
                     std::vector<aligned_buffer>& buffers) {
  asio::io_context ctx(1);
  for (std::size_t i = 0; i < buffers.size(); ++i)
    asio::co_spawn(ctx, worker(e, *phases[i % phases.size()], buffers[i]), asio::detached);
  auto t0 = std::chrono::steady_clock::now();
  ctx.run();
  ckpt::io::wait_for_completions_posted();  // before ctx goes (ckpt/io.hpp)
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void fill_random(aligned_buffer& b, std::uint64_t seed) {
  std::uint64_t x = seed;
  for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
    x += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    std::memcpy(b.data() + i, &z, 8);
  }
}

std::string drop_file_cache(const std::string& path, bool system_wide) {
  std::string how = "none";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fdatasync(fd);
    if (::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0) how = "fadvise_dontneed";
    ::close(fd);
  }
  if (system_wide) {
    if (::geteuid() == 0) {
      ::sync();
      std::ofstream out("/proc/sys/vm/drop_caches");
      out << "1\n";
      out.flush();
      how += out ? "+drop_caches" : "+drop_caches_refused";
    } else {
      how += "+drop_caches_needs_root";
    }
  }
  return how;
}

result<raw_figures> raw_write_read_gibps(const std::string& dir, std::uint64_t bytes,
                                         const raw_options& o) {
  const std::uint64_t size = std::max<std::uint64_t>(4096, (bytes + 4095) / 4096 * 4096);
  auto created = io::engine::create({.backend = io::backend_kind::uring,
                                     .queue_depth = o.depth,
                                     .threads = std::max(4u, o.depth)});
  if (!created) return fail(std::move(created).error());
  auto& e = *created.value();
  const std::string path = dir + "/ckpt-perf-raw." + std::to_string(::getpid()) + ".dat";
  std::vector<aligned_buffer> buffers;
  const unsigned nbuf =
      static_cast<unsigned>(std::min<std::uint64_t>(o.depth, (size + o.block - 1) / o.block));
  for (unsigned i = 0; i < nbuf; ++i) {
    buffers.emplace_back(static_cast<std::size_t>(o.block));
    fill_random(buffers.back(), 0x5eed + i);
  }
  auto failed = [&](error err) -> result<raw_figures> {
    ::unlink(path.c_str());
    return fail(std::move(err).with_context("raw baseline " + path));
  };
  raw_figures out;
  auto fw = run(e.open(AT_FDCWD, path, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0644));
  if (!fw) return failed(std::move(fw).error());
  out.direct = fw.value().direct;
  if (auto laid = run(e.fallocate(fw.value(), 0, 0, size)); !laid) {
    return failed(std::move(laid).error());
  }
  io_phase w{.f = &fw.value(), .size = size, .block = o.block, .write = true};
  out.write_s = run_io_phase(e, w, buffers);
  auto t0 = std::chrono::steady_clock::now();
  auto synced = run(e.fsync(fw.value()));
  out.fsync_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)run(e.close(fw.value()));
  if (!w.error.empty()) return failed(error(errc::aborted, w.error));
  if (!synced) return failed(std::move(synced).error());
  constexpr double gib = 1024.0 * 1024.0 * 1024.0;
  out.write_gibps = double(size) / (out.write_s + out.fsync_s) / gib;
  if (o.read) {
    drop_file_cache(path, false);
    auto fr = run(e.open(AT_FDCWD, path, O_RDONLY | O_DIRECT));
    if (!fr) return failed(std::move(fr).error());
    out.direct = out.direct && fr.value().direct;
    io_phase r{.f = &fr.value(), .size = size, .block = o.block, .write = false};
    out.read_s = run_io_phase(e, r, buffers);
    (void)run(e.close(fr.value()));
    if (!r.error.empty()) return failed(error(errc::aborted, r.error));
    out.read_gibps = double(size) / out.read_s / gib;
  }
  ::unlink(path.c_str());
  return out;
}

result<double> raw_read_files_gibps(const std::vector<std::string>& paths, const raw_options& o) {
  auto created = io::engine::create({.backend = io::backend_kind::uring,
                                     .queue_depth = o.depth,
                                     .threads = std::max(4u, o.depth)});
  if (!created) return fail(std::move(created).error());
  auto& e = *created.value();
  std::vector<aligned_buffer> buffers;
  for (unsigned i = 0; i < o.depth; ++i)
    buffers.emplace_back(static_cast<std::size_t>(o.block));
  for (std::size_t i = 0; i < paths.size(); ++i)
    drop_file_cache(paths[i], i + 1 == paths.size());
  // All files at once, `depth` reads in flight in all, as a load reads them.
  std::vector<io::file> files;
  std::vector<io_phase> phases;
  auto close_all = [&] {
    for (auto& f : files)
      (void)run(e.close(f));
  };
  files.reserve(paths.size());
  phases.reserve(paths.size());
  std::uint64_t bytes = 0;
  for (const auto& path : paths) {
    auto f = run(e.open(AT_FDCWD, path, O_RDONLY | O_DIRECT));
    if (!f) {
      close_all();
      return fail(std::move(f).error().with_context("raw read baseline " + path));
    }
    files.push_back(f.value());
    auto st = run(e.statx(f.value().fd, "", AT_EMPTY_PATH));
    if (!st) {
      close_all();
      return fail(std::move(st).error().with_context("raw read baseline " + path));
    }
    // (Data files are whole pages: every unit is padded for O_DIRECT.)
    phases.push_back(
        {.f = &files.back(), .size = st.value().stx_size, .block = o.block, .write = false});
    bytes += st.value().stx_size;
  }
  std::vector<io_phase*> ps;
  for (auto& p : phases)
    ps.push_back(&p);
  const double secs = ps.empty() ? 0.0 : run_io_phases(e, ps, buffers);
  close_all();
  for (std::size_t i = 0; i < phases.size(); ++i) {
    if (!phases[i].error.empty()) {
      return fail(errc::aborted, "raw read baseline " + paths[i] + ": " + phases[i].error);
    }
  }
  constexpr double gib = 1024.0 * 1024.0 * 1024.0;
  return secs > 0 ? double(bytes) / secs / gib : 0.0;
}

}  // namespace ckpt::perf
