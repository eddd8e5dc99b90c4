// The save pipeline. See docs/FORMAT.md for the on-disk result and RELIABILITY.md for the order
// of durable steps. Everything below runs as coroutines on the runtime's pipeline thread (one
// thread: no locks needed for pipeline state), except `capture_unit` (on the CPU pool) and
// `encode_unit` (on the background pool, niced), which touch only their own unit and staging
// buffer. A unit's life in a start_save: capture of borrowed/owned leaves (in unit order, so
// `staged` costs about a memcpy) -> encode in place -> O_DIRECT write -> buffer back to the pool.
// In a save whose caller waits for the commit (save, save_blocking), and for shared leaves,
// nothing is captured: raw page-aligned chunks are written straight from the leaf's memory and
// only the rest goes through a staging buffer, a bounded window of units in flight.
#include "checkpoint/durable.hpp"
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "io/async.hpp"
#include "pipeline/extents.hpp"
#include "pipeline/runtime_impl.hpp"
#include "pipeline/save_units.hpp"
#include "testing/testing.hpp"

#include <ckpt/save.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/json/serialize.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <unordered_map>

namespace ckpt {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

using pipeline::auto_data_files;
using pipeline::encode_captured;
using pipeline::encode_uncaptured;
using pipeline::io_align;
using pipeline::pack_units;
using pipeline::piece;
using pipeline::same_as_base;
using pipeline::save_slab_bytes;
using pipeline::segment;
using pipeline::stream_window;
using pipeline::unit;
using pipeline::unit_buffer_bytes;

struct save_handle::state : std::enable_shared_from_this<save_handle::state> {
  std::filesystem::path path;
  std::filesystem::path parent;
  std::string name;
  std::vector<flat_leaf> leaves;
  tree structure;
  boost::json::object metadata;
  save_options options;
  std::shared_ptr<runtime> rt;
  clock_type::time_point start = clock_type::now();

  detail::result_event staged_event;
  detail::result_event committed_event;
  std::atomic<bool> cancel_requested{false};

  mutable std::mutex stats_mutex;
  save_stats stats;
  std::atomic<std::uint64_t> encode_ns{0};
  std::atomic<std::uint64_t> capture_ns{0};
  std::atomic<std::uint64_t> direct_bytes{0};

  // Pipeline state (pipeline thread only).
  format::index ix;
  std::vector<unit> units;
  std::size_t capture_left = 0;
  std::optional<error> failure;
  detail::result_event prepared;  // set when prepare() finished (failure holds its error)
  io::file parent_dir;            // fd -1 until opened
  io::file tmp_dir;
  std::string tmp_name;
  std::vector<io::file> data_files;
  std::vector<std::uint64_t> file_ends;
  // Bytes of each data file already given a size by fallocate: O_DIRECT writes inside the size
  // run concurrently, extending ones are serialised by ext4. UINT64_MAX: no preallocation.
  std::vector<std::uint64_t> file_alloc;
  std::vector<std::unique_ptr<detail::async_budget>> file_grow;  // one grower per file
  // The most bytes one data file can end up with (least-filled placement: its share of the
  // other units plus the largest; stored <= raw, padded). Preallocation stops there.
  std::uint64_t file_budget = std::numeric_limits<std::uint64_t>::max();
  std::unique_ptr<detail::async_budget> encode_slots;
  // Someone may be waiting for `staged` (start_save): borrowed and owned leaves are captured,
  // every capture queued on the CPU pool at once. A save whose caller waits for the commit
  // (save, save_blocking) captures nothing: it streams from the leaves' memory, at most
  // `window` bytes of units (stream_window, or the staging budget when smaller) in flight.
  bool staged_first = true;
  std::unique_ptr<detail::async_budget> window;
  std::uint64_t slab_bytes = 0;
  // A differential save: the base's index and directory (open until the save ends), the name
  // it gives the base's files and, per base file, its index in ix.files once a chunk uses it.
  std::optional<format::index> base_ix;
  io::file base_dir;
  std::string base_origin;     // the base's name (origin of its own data files)
  std::uint64_t base_uid = 0;  // the base's index checksum: names its files' links
  std::vector<std::uint32_t> linked;
  std::vector<checkpoint::link_request> links;
  std::size_t own_files = 0;   // ix.files[0, own_files) are this save's data files
  detail::tracked_save track;  // a tracking runtime's (runtime_options::track_writes)

  double since_start() const {
    return std::chrono::duration<double>(clock_type::now() - start).count();
  }
  void fail_with(error e) {
    if (!failure) failure = std::move(e);
  }
  io::engine& io() { return rt->io(); }
  detail::runtime_internals& rti() { return detail::access::internals(*rt); }

  asio::awaitable<void> run();
  asio::awaitable<result<void>> open_base();
  result<std::uint32_t> link_base_file(std::uint32_t f);
  asio::awaitable<result<void>> prepare();
  asio::awaitable<void> prepare_then_signal();
  asio::awaitable<void> capture_unit(std::size_t u, std::shared_ptr<aligned_buffer> buf);
  asio::awaitable<void> capture_and_write();
  asio::awaitable<void> grow_file(std::size_t f, std::uint64_t end);
  asio::awaitable<result<void>> write_at(std::size_t f, std::span<const std::byte> bytes,
                                         std::uint64_t offset);
  asio::awaitable<result<void>> process_unit(std::size_t u);
  asio::awaitable<void> encode_unit(std::size_t u, std::shared_ptr<aligned_buffer> buf);
  asio::awaitable<result<void>> commit();
  asio::awaitable<void> cleanup();
  void plan();
};

void save_handle::state::plan() {
  // The index model: files come later; leaves and structure now.
  ix.leaves.resize(leaves.size());
  const std::uint64_t cb = std::max<std::uint64_t>(options.chunk_bytes, 4096);
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    const auto& a = leaves[i].array;
    auto& le = ix.leaves[i];
    le.path = leaves[i].path;
    le.dtype = a.dtype();
    le.shape = a.shape();
    le.num_bytes = a.num_bytes();
  }
  format::set_structure(ix, structure);

  units = pack_units(leaves, cb, staged_first);
  for (const auto& u : units) {
    for (const auto& pc : u.pieces)
      ix.leaves[pc.leaf].chunks.resize(
          std::max<std::size_t>(ix.leaves[pc.leaf].chunks.size(), pc.chunk + 1));
  }
  if (base_ix) {
    // The base's leaf of the same path and dtype, and where each of its chunks starts.
    std::unordered_map<std::string_view, std::uint32_t> by_path;
    for (std::uint32_t i = 0; i < base_ix->leaves.size(); ++i)
      by_path.emplace(base_ix->leaves[i].path, i);
    std::vector<std::vector<std::uint64_t>> starts(leaves.size());
    std::vector<const format::leaf_entry*> match(leaves.size(), nullptr);
    for (std::size_t i = 0; i < leaves.size(); ++i) {
      auto it = by_path.find(ix.leaves[i].path);
      if (it == by_path.end()) continue;
      const auto& bl = base_ix->leaves[it->second];
      if (bl.dtype != ix.leaves[i].dtype) continue;
      match[i] = &bl;
      std::uint64_t off = 0;
      for (const auto& c : bl.chunks) {
        starts[i].push_back(off);
        off += c.raw_size;
      }
    }
    for (auto& u : units) {
      for (auto& pc : u.pieces) {
        const format::leaf_entry* bl = match[pc.leaf];
        if (!bl || pc.chunk >= bl->chunks.size()) continue;
        const auto& bc = bl->chunks[pc.chunk];
        if (bc.hashed && starts[pc.leaf][pc.chunk] == pc.raw_offset && bc.raw_size == pc.raw_size)
          pc.base = &bc;
      }
    }
  }
  if (options.hash_chunks) track = look_at_leaves(rti().tracker.get(), leaves, units);
  for (const auto& u : units) {
    if (u.needs_capture) ++capture_left;
  }
  std::lock_guard l(stats_mutex);
  stats.leaves = leaves.size();
  for (const auto& le : ix.leaves) {
    stats.logical_bytes += le.num_bytes;
    stats.chunks += le.chunks.size();
  }
}

// The base of a differential save: its index read and checked like a load's (checkpoint/
// files.hpp), its directory kept open for the hard links. With base_optional a base that cannot
// be used makes this a full save (stats.base_note says why).
asio::awaitable<result<void>> save_handle::state::open_base() {
  if (options.base.empty()) co_return success();
  auto unusable = [&](const std::string& why) -> result<void> {
    const std::string msg = "base " + options.base.string() + ": " + why;
    if (!options.base_optional) return fail(errc::invalid_argument, msg);
    std::lock_guard l(stats_mutex);
    stats.base_note = msg + "; saved in full";
    return success();
  };
  if (!options.hash_chunks) co_return unusable("a differential save needs hash_chunks");
  checkpoint::read_options ro;
  ro.stop_at_first = true;
  ro.keep_dir = true;
  auto cf = co_await checkpoint::read_files(io(), options.base, ro);
  if (!cf) co_return unusable(cf.error().message());
  auto& files = cf.value();
  if (!files.committed() || files.sharded() || !files.index) {
    if (files.dir.fd >= 0) (void)co_await io().close(files.dir);
    co_return unusable(files.sharded() ? "a sharded checkpoint cannot be a base"
                                       : files.first_problem().message());
  }
  // Hard links need one file system: the base's and the nearest existing parent's.
  std::error_code ec;
  fs::path probe = parent;
  while (!probe.empty() && !fs::exists(probe, ec) && probe.has_parent_path() &&
         probe.parent_path() != probe)
    probe = probe.parent_path();
  struct stat sb {
  }, sp{};
  if (::fstat(files.dir.fd, &sb) != 0 || ::stat(probe.c_str(), &sp) != 0 ||
      sb.st_dev != sp.st_dev) {
    (void)co_await io().close(files.dir);
    co_return unusable("not on the file system of " + parent.string() +
                       " (a differential checkpoint hard-links the base's data files)");
  }
  // ... and must work there (some FUSE and object-store mounts refuse them): a link of the
  // base's COMMIT under a temporary name in that directory, removed at once (a crash between
  // the two leaves a `.<name>.tmp-*` file that start-up cleanup removes).
  auto pd = co_await io().open(AT_FDCWD, probe.string(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!pd) {
    (void)co_await io().close(files.dir);
    co_return unusable(pd.error().message());
  }
  const io::file probe_dir = pd.value();
  const std::string probe_name = checkpoint::temp_name(name, checkpoint::unique_suffix());
  auto linked_ok =
      co_await io().link(files.dir.fd, std::string(format::commit_file), probe_dir.fd, probe_name);
  if (linked_ok) (void)co_await io().unlink(probe_dir.fd, probe_name);
  (void)co_await io().close(probe_dir);
  if (!linked_ok) {
    (void)co_await io().close(files.dir);
    co_return unusable("the file system of " + probe.string() + " refuses hard links (" +
                       linked_ok.error().message() + ")");
  }
  base_dir = files.dir;
  base_uid = files.commit->index_xxh3;
  base_origin = fs::path(options.base).lexically_normal().filename().string();
  if (base_origin.empty()) base_origin = fs::path(options.base).parent_path().filename().string();
  linked.assign(files.index->files.size(), std::numeric_limits<std::uint32_t>::max());
  base_ix = std::move(files.index);
  co_return success();
}

// The index in ix.files of base file `f`, hard-linked into the new checkpoint when the first
// chunk in it is shared (pipeline thread). A file the base itself shares keeps its name and
// origin, so that every checkpoint names one physical file alike.
result<std::uint32_t> save_handle::state::link_base_file(std::uint32_t f) {
  if (linked[f] != std::numeric_limits<std::uint32_t>::max()) return linked[f];
  const format::file_entry& bf = base_ix->files[f];
  format::file_entry fe;
  fe.size = bf.size;
  fe.name = bf.origin.empty() ? format::shared_file_name(base_uid, f) : bf.name;
  fe.origin = bf.origin.empty() ? base_origin : bf.origin;
  for (const auto& e : ix.files) {
    if (e.name == fe.name) {
      return fail(errc::already_exists, "data file name " + fe.name + " is taken twice");
    }
  }
  links.push_back({base_dir, bf.name, fe.name});
  linked[f] = static_cast<std::uint32_t>(ix.files.size());
  ix.files.push_back(std::move(fe));
  return linked[f];
}

asio::awaitable<result<void>> save_handle::state::prepare() {
  if (name.empty() || name == "." || name == "..") {
    co_return fail(errc::invalid_argument, "checkpoint path \"" + path.string() + "\" has no name");
  }
  // Parent directories (created and made durable when missing).
  CKPT_CO_TRY(co_await checkpoint::make_directories(io(), parent));
  CKPT_CO_TRY(io::file pf,
              co_await io().open(AT_FDCWD, parent.string(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  parent_dir = pf;

  // An existing checkpoint is replaced only when asked to.
  auto existing = co_await io().statx(parent_dir.fd, name, AT_SYMLINK_NOFOLLOW);
  if (existing && !options.overwrite) {
    co_return fail(errc::already_exists,
                   path.string() + " already exists (pass save_options::overwrite to replace it)");
  }

  // Preflight: enough free space for the leaves' raw bytes (an upper bound of what we write).
  struct statvfs vfs {};
  if (::fstatvfs(parent_dir.fd, &vfs) == 0) {
    std::uint64_t free_bytes = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    std::uint64_t need = stats.logical_bytes + (1u << 20);
    if (!options.compress && free_bytes < need) {
      co_return fail(system_error(
          ENOSPC, "preflight: " + parent.string() + " has " + std::to_string(free_bytes) +
                      " bytes free, the save needs " + std::to_string(need)));
    }
  }

  tmp_name = checkpoint::temp_name(name, checkpoint::unique_suffix());
  CKPT_CO_TRYV_CTX(co_await io().mkdir(parent_dir.fd, tmp_name, 0755), "create " + tmp_name);
  CKPT_CO_TRY(io::file tf,
              co_await io().open(parent_dir.fd, tmp_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  tmp_dir = tf;

  std::uint64_t total = 0, largest = 0;
  for (const auto& u : units) {
    total += align_up(u.raw_bytes, io_align);
    largest = std::max(largest, align_up(u.raw_bytes, io_align));
  }
  const unsigned nfiles = static_cast<unsigned>(std::min<std::uint64_t>(
      options.data_files != 0 ? options.data_files : auto_data_files(total), units.size()));
  file_budget = (total - largest + nfiles - 1) / std::max(1u, nfiles) + largest;
  for (unsigned i = 0; i < nfiles; ++i) {
    std::string fname = format::data_file_name(i);
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (options.direct_io ? O_DIRECT : 0);
    CKPT_CO_TRY(io::file f, co_await io().open(tmp_dir.fd, fname, flags, 0644));
    data_files.push_back(f);
    file_ends.push_back(0);
    file_alloc.push_back(f.direct ? 0 : std::numeric_limits<std::uint64_t>::max());
    file_grow.push_back(std::make_unique<detail::async_budget>(1));
    ix.files.push_back({fname, 0, {}});
  }
  own_files = ix.files.size();
  co_return success();
}

namespace {

std::uint64_t elapsed_ns(clock_type::time_point t0) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
}

}  // namespace

asio::awaitable<void> save_handle::state::encode_unit(std::size_t u,
                                                      std::shared_ptr<aligned_buffer> buf) {
  auto t0 = clock_type::now();
  unit& un = units[u];
  const format::codec_policy policy{options.compress, options.shuffle, options.min_ratio};
  un.rel_offsets.resize(un.pieces.size());
  if (un.needs_capture) {
    encode_captured(un, leaves, ix, policy, options.hash_chunks, *buf, track);
  } else {
    encode_uncaptured(un, leaves, ix, policy, options.hash_chunks, *buf, rti().buffers, slab_bytes,
                      track);
  }
  encode_ns += elapsed_ns(t0);
  co_return;
}

asio::awaitable<void> save_handle::state::capture_unit(std::size_t u,
                                                       std::shared_ptr<aligned_buffer> buf) {
  auto t0 = clock_type::now();
  std::uint64_t cursor = 0;
  for (piece& pc : units[u].pieces) {
    // A differential save copies only what changed since the base.
    const auto src = leaves[pc.leaf].array.bytes().subspan(pc.raw_offset, pc.raw_size);
    if (same_as_base(ix, pc, src, track)) continue;
    std::memcpy(buf->data() + cursor, src.data(), pc.raw_size);
    cursor += pc.raw_size;
  }
  capture_ns += elapsed_ns(t0);
  co_return;  // (a coroutine: co_spawned onto the CPU pool)
}

// One unit, holding its unit_buffer_bytes of the staging budget (taken by the task group) and,
// in a streaming save, slab_bytes of the save's window. Its failure goes to fail_with, the save's
// one failure; the task itself always succeeds.
asio::awaitable<result<void>> save_handle::state::process_unit(std::size_t u) {
  auto self = shared_from_this();
  auto& rti_ = rti();
  unit& un = units[u];
  // A captured unit's staging buffer now; an uncaptured one's when its encoder needs it.
  auto buf = std::make_shared<aligned_buffer>(
      un.needs_capture ? rti_.buffers.take(unit_buffer_bytes(un, slab_bytes)) : aligned_buffer());
  // 1. Capture (borrowed/owned bytes of a start_save): a plain copy into the staging buffer, all
  //    queued on the CPU pool at once (no hop back here between units, which is what keeps
  //    `staged` at about a memcpy).
  if (un.needs_capture) {
    if (!failure) {
      co_await asio::co_spawn(rti_.pool, capture_unit(u, buf), asio::use_awaitable);
    }
    if (--capture_left == 0) {
      {
        std::lock_guard l(stats_mutex);
        stats.staged_s = since_start();
      }
      if (!failure) staged_event.set(success());
    }
  }
  // 2. Encode (codec choice, compression, checksum) with a bounded number in flight, once the
  //    temporary directory and data files exist.
  (void)co_await prepared.wait_async();  // (always success(): failures go to fail_with)
  co_await encode_slots->acquire(1);
  if (!failure) co_await asio::co_spawn(rti_.background, encode_unit(u, buf), asio::use_awaitable);
  encode_slots->release(1);
  if (!failure) {
    // Least-filled file next: the files grow evenly and are written in parallel.
    std::size_t f = static_cast<std::size_t>(std::min_element(file_ends.begin(), file_ends.end()) -
                                             file_ends.begin());
    const std::uint64_t off = file_ends[f];
    file_ends[f] += un.extent;
    for (std::size_t p = 0; p < un.pieces.size(); ++p) {
      const piece& pc = un.pieces[p];
      auto& ce = ix.leaves[pc.leaf].chunks[pc.chunk];
      if (pc.shared) {
        // The base's bytes, through a hard link to the base's file that holds them (a chunk of
        // fill runs only holds none: nothing to link).
        std::uint32_t file = static_cast<std::uint32_t>(f);
        if (pc.base->stored_size != 0) {
          auto lf = link_base_file(pc.base->file);
          if (!lf) {
            fail_with(std::move(lf).error());
            break;
          }
          file = lf.value();
        }
        ce = *pc.base;
        ce.file = file;
        std::lock_guard l(stats_mutex);
        stats.shared_bytes += pc.raw_size;
        ++stats.shared_chunks;
        if (pc.known) stats.untouched_bytes += pc.raw_size;
        continue;
      }
      ce.file = static_cast<std::uint32_t>(f);
      ce.offset = ce.stored_size == 0 ? 0 : off + un.rel_offsets[p];  // (0: fill runs only)
    }
    co_await grow_file(f, off + un.extent);
    if (!failure) {
      // The unit's segments (disjoint) all at once: one after another, a unit of a direct piece
      // and a staging run kept its second write waiting for the first, which left a small save
      // (36 MiB of tensors) with a write queue of one per unit after its first writes.
      std::vector<asio::awaitable<result<void>>> writes;
      writes.reserve(un.out.size());
      for (const segment& sg : un.out) {
        if (sg.from_leaf) direct_bytes += sg.bytes.size();
        writes.push_back(write_at(f, sg.bytes, off + sg.rel));
      }
      auto w = co_await detail::when_all(co_await asio::this_coro::executor, std::move(writes));
      if (!w) fail_with(std::move(w).error());
    }
  }
  un.out.clear();
  rti_.buffers.give(std::move(*buf));
  if (window) window->release(slab_bytes);
  co_return success();
}

asio::awaitable<result<void>> save_handle::state::write_at(std::size_t f,
                                                           std::span<const std::byte> bytes,
                                                           std::uint64_t offset) {
  auto self = shared_from_this();
  CKPT_CO_TRY(co_await io().write(data_files[f], bytes, offset));
  co_return success();
}

asio::awaitable<void> save_handle::state::grow_file(std::size_t f, std::uint64_t end) {
  if (end <= file_alloc[f]) co_return;
  constexpr std::uint64_t step = 64ull << 20;
  co_await file_grow[f]->acquire(1);
  while (!failure && end > file_alloc[f]) {
    // Never beyond what the file can hold at most: a small save must not need 64 MiB free per
    // file (found by the ENOSPC test).
    std::uint64_t grow =
        std::max(end - file_alloc[f],
                 std::min(step, file_budget > file_alloc[f] ? file_budget - file_alloc[f] : 0));
    auto g = co_await io().fallocate(data_files[f], 0, file_alloc[f], grow);
    if (!g && g.error() == std::errc::no_space_on_device && grow > end - file_alloc[f]) {
      // Less free space than the step: give back what the failed call allocated (ext4 keeps
      // it) and grow by exactly what this write needs.
      grow = end - file_alloc[f];
      g = co_await io().ftruncate(data_files[f], file_alloc[f]);
      if (g) g = co_await io().fallocate(data_files[f], 0, file_alloc[f], grow);
    }
    if (g) {
      file_alloc[f] += grow;
    } else if (g.error() == std::errc::operation_not_supported) {
      file_alloc[f] = std::numeric_limits<std::uint64_t>::max();
    } else {
      fail_with(g.error());
    }
  }
  file_grow[f]->release(1);
}

asio::awaitable<void> save_handle::state::capture_and_write() {
  auto self = shared_from_this();
  auto ex = co_await asio::this_coro::executor;
  auto& rti_ = rti();
  slab_bytes = save_slab_bytes(options.chunk_bytes);
  encode_slots = std::make_unique<detail::async_budget>(std::max(2u, rt->cpu_threads() * 2));
  if (!staged_first) {
    window = std::make_unique<detail::async_budget>(
        std::max(slab_bytes, std::min(rti_.staging.capacity(), stream_window)));
  }
  if (testing::planted("fsync_before_write")) {  // test builds only: a deliberate bug
    (void)co_await prepared.wait_async();        // (always success(): failures go to fail_with)
    for (auto& f : data_files)
      (void)co_await io().fsync(f);
  }
  detail::task_group g(ex);
  std::size_t started = 0;
  while (started < units.size() && !failure && !cancel_requested) {
    if (window) co_await window->acquire(slab_bytes);
    const std::uint64_t cost = unit_buffer_bytes(units[started], slab_bytes);
    const bool ok = co_await g.spawn(process_unit(started), &rti_.staging, cost);
    if (!ok) {
      if (window) window->release(slab_bytes);
      break;
    }
    ++started;
  }
  // Account for the units never started.
  for (std::size_t v = started; v < units.size(); ++v) {
    if (units[v].needs_capture) --capture_left;
  }
  (void)co_await g.wait();
  if (cancel_requested && !failure) fail_with(error(errc::cancelled, "cancelled"));
}

asio::awaitable<result<void>> save_handle::state::commit() {
  auto ex = co_await asio::this_coro::executor;
  // Preallocated space beyond the data goes, so that each file is exactly its chunks.
  for (std::size_t f = 0; f < data_files.size(); ++f) {
    if (file_alloc[f] != std::numeric_limits<std::uint64_t>::max() &&
        file_alloc[f] > file_ends[f]) {
      CKPT_CO_TRY(co_await io().ftruncate(data_files[f], file_ends[f]));
    }
  }
  auto t_commit = clock_type::now();
  for (std::size_t i = 0; i < own_files; ++i)
    ix.files[i].size = file_ends[i];

  // The files a differential save links are known only now: the caps once more.
  if (!links.empty()) {
    CKPT_CO_TRY(format::check_writable(ix));
  }
  // 5. metadata.json, job.json, index.json, each fsynced.
  format::commit_marker cm;
  std::string meta = boost::json::serialize(metadata);
  std::string index_json = format::encode_index(ix);
  cm.metadata_bytes = meta.size();
  cm.metadata_xxh3 = format::checksum(std::as_bytes(std::span(meta)));
  cm.index_bytes = index_json.size();
  cm.index_xxh3 = format::checksum(std::as_bytes(std::span(index_json)));
  std::string job;
  if (options.job) {
    job = boost::json::serialize(*options.job);
    cm.has_job = true;
    cm.job_bytes = job.size();
    cm.job_xxh3 = format::checksum(std::as_bytes(std::span(job)));
  }
  for (const auto& f : ix.files)
    cm.stored_bytes += f.size;  // (every data file of the index, linked ones too)
  cm.logical_bytes = stats.logical_bytes;
  cm.created_unix_ns =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  // 4.-8. The data files' fsyncs, the small files, COMMIT, the directory fsyncs and the rename:
  //       checkpoint/durable.hpp. The data files are the commit's to close from here on.
  checkpoint::commit_request rq;
  rq.data_files = std::exchange(data_files, {});
  rq.links = links;
  rq.parent_dir = parent_dir;
  rq.parent = parent;
  rq.tmp_dir = tmp_dir;
  rq.tmp_name = tmp_name;
  rq.name = name;
  rq.files.push_back({std::string(format::metadata_file), std::move(meta)});
  if (options.job) rq.files.push_back({std::string(format::job_file), std::move(job)});
  rq.files.push_back({std::string(format::index_file), std::move(index_json)});
  rq.marker = {std::string(format::commit_file), format::encode_commit(cm)};
  rq.overwrite = options.overwrite;
  if (cancel_requested) {
    rq.data_files.swap(data_files);  // closed by cleanup()
    co_return fail(errc::cancelled, "cancelled");
  }
  CKPT_CO_TRY(auto timing, co_await checkpoint::commit(io(), std::move(rq)));
  tmp_name.clear();  // the temporary directory is the checkpoint now
  std::lock_guard l(stats_mutex);
  stats.fsync_s = timing.data_fsync_s;
  stats.commit_s =
      std::chrono::duration<double>(clock_type::now() - t_commit).count() - timing.data_fsync_s;
  co_return success();
}

asio::awaitable<void> save_handle::state::cleanup() {
  for (auto& f : data_files) {
    if (f.fd >= 0) (void)co_await io().close(f);
    f.fd = -1;
  }
  if (!tmp_name.empty()) (void)co_await checkpoint::remove_tree(io(), parent / tmp_name);
}

asio::awaitable<void> save_handle::state::prepare_then_signal() {
  auto self = shared_from_this();
  auto p = co_await prepare();
  if (!p) fail_with(std::move(p).error());
  prepared.set(success());
}

asio::awaitable<void> save_handle::state::run() {
  auto self = shared_from_this();
  auto finish = [&](result<void> r) {
    {
      std::lock_guard l(stats_mutex);
      stats.committed_s = since_start();
      stats.encode_s = static_cast<double>(encode_ns.load()) * 1e-9;
      stats.capture_s = static_cast<double>(capture_ns.load()) * 1e-9;
      stats.direct_bytes = direct_bytes.load();
      if (r && stats.staged_s == 0) stats.staged_s = stats.committed_s;
    }
    staged_event.set(r);
    committed_event.set(std::move(r));
  };
  auto based = co_await open_base();  // (not in the if: GCC 12 and co_await, HACKING.md)
  if (!based) {
    finish(fail(std::move(based).error().with_context("save " + path.string())));
    co_return;
  }
  plan();
  // Nothing is written that a reader would refuse (the reader's caps, its messages).
  if (auto w = format::check_writable(ix); !w) {
    finish(fail(std::move(w).error().with_context("save " + path.string())));
    co_return;
  }
  if (capture_left == 0) {
    // Nothing to capture: the caller's buffers are free to change now.
    std::lock_guard l(stats_mutex);
    stats.staged_s = since_start();
    staged_event.set(success());
  }
  // Directory and files are made while the borrowed bytes are captured.
  asio::co_spawn(co_await asio::this_coro::executor, prepare_then_signal(), asio::detached);
  co_await capture_and_write();
  (void)co_await prepared.wait_async();  // (always success(): failures go to fail_with)
  {
    std::lock_guard l(stats_mutex);
    stats.written_s = since_start();
  }
  if (!failure) {
    auto c = co_await commit();
    if (!c) fail_with(std::move(c).error());
  }
  bool committed = !failure;
  if (!committed) co_await cleanup();
  if (tmp_dir.fd >= 0) (void)co_await io().close(tmp_dir);
  if (parent_dir.fd >= 0) (void)co_await io().close(parent_dir);
  if (base_dir.fd >= 0) (void)co_await io().close(base_dir);
  if (committed) {
    std::lock_guard l(stats_mutex);
    for (auto e : file_ends)
      stats.stored_bytes += e;
  }
  if (committed) {
    finish(success());
  } else {
    finish(fail(std::move(*failure).with_context("save " + path.string())));
  }
}

namespace {
asio::awaitable<void> run_owned(std::shared_ptr<save_handle::state> s) {
  co_await s->run();
}
}  // namespace

namespace {
save_handle start(std::filesystem::path path, tree t, boost::json::object metadata,
                  save_options options, bool staged_first) {
  auto s = std::make_shared<save_handle::state>();
  auto refuse = [&](error e) {
    s->staged_event.set(fail(e));
    s->committed_event.set(fail(e));
    return detail::access::handle<save_handle>(s);
  };
  std::error_code ec;
  auto absolute = path.empty() ? std::filesystem::path() : std::filesystem::absolute(path, ec);
  if (path.empty() || ec) {
    return refuse(error(errc::invalid_argument,
                        "save: checkpoint path \"" + path.string() + "\" is not usable" +
                            (ec ? " (" + ec.message() + ")" : std::string(" (empty)"))));
  }
  s->staged_first = staged_first;
  s->rt = runtime_or_global(options.runtime);
  s->path = absolute.lexically_normal();
  if (!s->path.has_filename() && s->path.has_parent_path()) s->path = s->path.parent_path();
  s->parent = s->path.parent_path();
  s->name = s->path.filename().string();
  s->leaves = t.flatten();
  s->structure = std::move(t);
  s->metadata = std::move(metadata);
  s->options = std::move(options);
  bool capture = false;
  for (const auto& l : s->leaves) {
    capture |= staged_first && l.array.ownership() != ownership::shared && l.array.num_bytes() > 0;
    if (l.array.is_spec()) {
      return refuse(error(
          errc::invalid_argument,
          "save " + s->path.string() + ": leaf \"" + l.path + "\" has no bytes (a template spec)"));
    }
  }
  // Nothing to capture: the caller may go on at once, without a trip to the pipeline thread.
  if (!capture) s->staged_event.set(success());
  // The coroutine owns the state (and through it the runtime) from the start, not only once it
  // first runs: a caller may drop every handle, and its runtime, right after this call.
  auto ex = s->rt->executor();
  asio::co_spawn(ex, run_owned(s), asio::detached);
  return detail::access::handle<save_handle>(s);
}
}  // namespace

save_handle start_save(std::filesystem::path path, const tree& t, boost::json::object metadata,
                       save_options options) {
  return start(std::move(path), t, std::move(metadata), std::move(options), true);
}

asio::awaitable<result<void>> save_handle::staged() const {
  co_return co_await state_->staged_event.async_wait(asio::use_awaitable);
}
asio::awaitable<result<void>> save_handle::committed() const {
  co_return co_await state_->committed_event.async_wait(asio::use_awaitable);
}
result<void> save_handle::wait_staged() const {
  return state_->staged_event.wait();
}
result<void> save_handle::wait_committed() const {
  return state_->committed_event.wait();
}
bool save_handle::is_staged() const noexcept {
  return state_->staged_event.is_set();
}
bool save_handle::wait_done_for(std::chrono::steady_clock::duration timeout) const {
  return state_->committed_event.wait_for(timeout);
}
bool save_handle::is_done() const noexcept {
  return state_->committed_event.is_set();
}
void save_handle::cancel() const noexcept {
  state_->cancel_requested = true;
}
save_stats save_handle::stats() const {
  std::lock_guard l(state_->stats_mutex);
  return state_->stats;
}
const std::filesystem::path& save_handle::path() const noexcept {
  return state_->path;
}

asio::awaitable<result<save_stats>> save(std::filesystem::path path, tree t,
                                         boost::json::object metadata, save_options options) {
  auto h = start(std::move(path), std::move(t), std::move(metadata), std::move(options), false);
  CKPT_CO_TRY(co_await h.committed());
  co_return h.stats();
}

result<save_stats> save_blocking(std::filesystem::path path, const tree& t,
                                 boost::json::object metadata, save_options options) {
  auto h = start(std::move(path), t, std::move(metadata), std::move(options), false);
  CKPT_TRY(h.wait_committed());
  return h.stats();
}

std::uint64_t reserve_staging(const tree& t, const save_options& options) {
  auto rt = runtime_or_global(options.runtime);
  auto& pool = detail::access::internals(*rt).buffers;
  const std::uint64_t slab = save_slab_bytes(options.chunk_bytes);
  // The buffers of a start_save of `t`'s write units (all in flight at once at most), within
  // the staging budget.
  const auto units =
      pack_units(t.flatten(), std::max<std::uint64_t>(options.chunk_bytes, 4096), true);
  std::vector<aligned_buffer> held;
  std::uint64_t total = 0;
  for (const auto& u : units) {
    const std::uint64_t n = unit_buffer_bytes(u, slab);
    if (total + n > rt->staging_budget()) break;
    held.push_back(pool.take_faulted(static_cast<std::size_t>(n)));
    total += n;
  }
  for (auto& b : held)
    pool.give(std::move(b));
  return total;
}

}  // namespace ckpt
