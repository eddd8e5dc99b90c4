// Sharded checkpoints: the collective save protocol (see the top of ckpt/shard.hpp and
// docs/FORMAT.md, "Sharded checkpoints") and resharding loads.
//
// Save. The protocol runs on a thread of its own per save, because coordinator collectives
// block; the rank's own checkpoint is written by save.hpp's pipeline on the runtime. Every rank
// runs the same four collectives in the same order whatever happens locally (gather of leaf
// descriptions, broadcast of the plan, gather of manifests, broadcast of the verdict), except
// that a failed plan ends the save on every rank right after its broadcast. Messages are JSON.
//
// Load. The sharded index says which rank's checkpoint holds which slice; every wanted slice is
// intersected with the saved ones, each non-empty intersection becomes a ranged read of the
// saved leaf (the bytes from its first to its last element), and a sink copies the
// intersection's rows out of each decoded chunk. All needed rank checkpoints are validated
// before the first byte lands in the caller's memory.
#include "checkpoint/durable.hpp"
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "format/sharded.hpp"
#include "io/async.hpp"
#include "pipeline/load_ranges.hpp"
#include "pipeline/runtime_impl.hpp"
#include "shard/outcome_wire.hpp"
#include "testing/testing.hpp"

#include <ckpt/shard.hpp>

#include <boost/asio/use_awaitable.hpp>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace ckpt {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Slices
// ---------------------------------------------------------------------------------------------

std::string slice::to_string() const {
  return format::box_to_string({offset, extent});
}

slice whole(const ckpt::shape& global) {
  return {ckpt::shape(global.size(), 0), global};
}

slice slice_along(const ckpt::shape& global, std::size_t dim, int index, int count) {
  if (global.empty()) return whole(global);
  if (dim >= global.size() || count < 1 || index < 0 || index >= count) {
    throw std::invalid_argument("slice_along: part " + std::to_string(index) + " of " +
                                std::to_string(count) + " along dimension " + std::to_string(dim) +
                                " of " + shape_to_string(global));
  }
  const std::int64_t n = global[dim], c = count, i = index;
  const std::int64_t base = n / c, rem = n % c;
  slice s = whole(global);
  s.offset[dim] = i * base + std::min(i, rem);
  s.extent[dim] = base + (i < rem ? 1 : 0);
  return s;
}

slice row_slice(const ckpt::shape& global, int index, int count) {
  return slice_along(global, 0, index, count);
}

sharded_leaf sharded_leaf::replicated_leaf(std::string path, ckpt::array data) {
  sharded_leaf l;
  l.path = std::move(path);
  l.dtype = data.dtype();
  l.global_shape = data.shape();
  l.shards.push_back({whole(data.shape()), std::move(data)});
  l.replicated = true;
  return l;
}

result<sharded_leaf> sharded_leaf::spec(std::string path, ckpt::dtype dtype,
                                        ckpt::shape global_shape,
                                        const std::vector<slice>& slices) {
  sharded_leaf l;
  l.path = std::move(path);
  l.dtype = dtype;
  l.global_shape = std::move(global_shape);
  for (const auto& s : slices) {
    CKPT_TRY(auto a, array::spec(dtype, s.extent));
    l.shards.push_back({s, std::move(a)});
  }
  return l;
}

namespace {

format::box to_box(const slice& s) {
  return {s.offset, s.extent};
}

// Checks one leaf as this rank passes it: path, shape, slices inside the global shape and not
// overlapping one another, data matching each slice (`need_bytes`: a save needs real bytes).
result<void> check_leaf(const sharded_leaf& l, bool need_bytes) {
  const std::string what = "leaf \"" + l.path + "\"";
  if (l.path.empty()) return fail(errc::invalid_argument, "a sharded leaf has an empty path");
  CKPT_TRYV_CTX(split_path(l.path), what);
  CKPT_TRYV_CTX(byte_size(l.dtype, l.global_shape), what);
  if (l.replicated && (l.shards.size() != 1 || l.shards[0].where != whole(l.global_shape))) {
    return fail(errc::invalid_argument,
                what + " is replicated: it needs exactly one shard holding the whole array");
  }
  std::vector<format::box> boxes;
  for (const auto& s : l.shards) {
    const format::box b = to_box(s.where);
    if (b.offset.size() != l.global_shape.size() || b.extent.size() != l.global_shape.size()) {
      return fail(errc::invalid_argument, what + ": slice " + s.where.to_string() + " has not " +
                                              std::to_string(l.global_shape.size()) +
                                              " dimensions");
    }
    for (std::size_t d = 0; d < b.offset.size(); ++d) {
      if (b.offset[d] < 0 || b.extent[d] < 0 || b.offset[d] > l.global_shape[d] ||
          b.extent[d] > l.global_shape[d] - b.offset[d]) {
        return fail(errc::invalid_argument, what + ": slice " + s.where.to_string() +
                                                " is not inside " +
                                                shape_to_string(l.global_shape));
      }
    }
    if (s.data.dtype() != l.dtype || s.data.shape() != s.where.extent) {
      return fail(errc::invalid_argument, what + ": the data of slice " + s.where.to_string() +
                                              " is " + s.data.describe() + ", expected " +
                                              std::string(dtype_name(l.dtype)) +
                                              shape_to_string(s.where.extent));
    }
    if (need_bytes && s.data.is_spec()) {
      return fail(errc::invalid_argument,
                  what + ": slice " + s.where.to_string() + " has no bytes (a template spec)");
    }
    for (const auto& o : boxes) {
      format::box x;
      if (box_nonempty(b) && box_intersect(o, b, x)) {
        return fail(errc::invalid_argument, what + ": this rank's slices " +
                                                format::box_to_string(o) + " and " +
                                                s.where.to_string() + " overlap");
      }
    }
    boxes.push_back(b);
  }
  return success();
}

boost::json::array shape_json(const ckpt::shape& s) {
  boost::json::array a;
  for (auto x : s)
    a.push_back(x);
  return a;
}

result<ckpt::shape> shape_from(const boost::json::value& v) {
  const auto* a = v.if_array();
  if (!a) return fail(errc::collective_failed, "malformed shape in a protocol message");
  ckpt::shape s;
  for (const auto& x : *a) {
    if (!x.is_int64()) return fail(errc::collective_failed, "malformed shape in a message");
    s.push_back(x.as_int64());
  }
  return s;
}

result<boost::json::object> parse_message(const std::string& text, std::string_view what) {
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_object()) {
    return fail(errc::collective_failed, std::string(what) + ": a message that does not parse");
  }
  return std::move(v.as_object());
}

std::string error_message(const error& e) {
  return boost::json::serialize(
      boost::json::object{{"ok", false}, {"error", detail::error_to_json(e)}});
}

// The error a message carries, or success when it says ok.
result<void> message_outcome(const boost::json::object& m, std::string_view prefix) {
  const auto* ok = m.if_contains("ok");
  if (ok && ok->is_bool() && ok->as_bool()) return success();
  const auto* e = m.if_contains("error");
  return fail(detail::error_from_json(e ? *e : boost::json::value(), prefix));
}

// Runs the local step `f` between two collectives. Nothing may escape it: a rank that skipped the
// next collective would leave every other rank waiting. (Boost.JSON's accessors throw on a
// malformed message, e.g. from a peer of another version.)
template <class F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    return fail(errc::collective_failed, std::string("sharded save: ") + e.what());
  }
}

std::uint64_t unix_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

// The parent directories (durable) and the temporary directory every rank writes into.
asio::awaitable<result<void>> make_temporary(io::engine& io, fs::path parent, std::string tmp) {
  CKPT_CO_TRY(co_await checkpoint::make_directories(io, parent));
  const std::string where = (parent / tmp).string();
  CKPT_CO_TRYV_CTX(co_await io.mkdir(AT_FDCWD, where, 0755), "create " + where);
  co_return success();
}

// The size and checksum of `dir/COMMIT`.
result<detail::expected_commit> commit_of(const fs::path& dir) {
  CKPT_TRY(std::string text,
           checkpoint::read_small_file(dir / std::string(format::commit_file), 1 << 20));
  return detail::expected_commit{text.size(), format::checksum(std::as_bytes(std::span(text)))};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Save
// ---------------------------------------------------------------------------------------------

struct sharded_save_handle::state : std::enable_shared_from_this<sharded_save_handle::state> {
  std::shared_ptr<coordinator> coord;
  fs::path path, parent;
  std::string name;
  std::vector<sharded_leaf> leaves;
  boost::json::object metadata;
  sharded_save_options options;
  std::shared_ptr<runtime> rt;  // the engine of rank 0's directory IO (options.local.runtime)
  std::uint64_t ticket = 0;
  clock_type::time_point start = clock_type::now();

  detail::result_event staged_event;
  detail::result_event committed_event;
  mutable std::mutex stats_mutex;
  sharded_save_stats stats;
  // cancel(): the flag, and this rank's own save while it runs (under stats_mutex).
  std::atomic<bool> cancel_requested{false};
  std::optional<save_handle> local_save;

  double since_start() const {
    return std::chrono::duration<double>(clock_type::now() - start).count();
  }
  void run();
  result<void> protocol();
  // Rank 0's parts.
  std::string make_plan(const std::vector<std::string>& descriptions, format::sharded_index& ix,
                        std::string& tmp_name);
  result<void> commit(const std::vector<std::string>& manifests, format::sharded_index& ix,
                      const std::string& tmp_name, std::uint64_t& logical, std::uint64_t& stored);
};

namespace {

// This rank's leaves as the plan's gather message.
std::string describe_leaves(const std::vector<sharded_leaf>& leaves) {
  std::unordered_set<std::string_view> seen;
  for (const auto& l : leaves) {
    auto c = check_leaf(l, true);
    if (!c) return error_message(c.error());
    if (!seen.insert(l.path).second) {
      return error_message(
          error(errc::invalid_argument, "leaf \"" + l.path + "\" is listed twice"));
    }
  }
  boost::json::array out;
  for (const auto& l : leaves) {
    boost::json::array slices;
    for (const auto& s : l.shards)
      slices.push_back(boost::json::array{shape_json(s.where.offset), shape_json(s.where.extent)});
    out.push_back(boost::json::object{{"path", l.path},
                                      {"dtype", dtype_name(l.dtype)},
                                      {"shape", shape_json(l.global_shape)},
                                      {"replicated", l.replicated},
                                      {"slices", std::move(slices)}});
  }
  return boost::json::serialize(boost::json::object{{"ok", true}, {"leaves", std::move(out)}});
}

// The path of slice k of global leaf `path` inside a rank's checkpoint: the tree is a dict
// keyed by global paths, each holding the list of that rank's slices.
std::string local_leaf_path(const std::string& global_path, std::size_t k) {
  return join_path(escape_key(global_path), std::to_string(k));
}

}  // namespace

std::string sharded_save_handle::state::make_plan(const std::vector<std::string>& descriptions,
                                                  format::sharded_index& ix,
                                                  std::string& tmp_name) {
  const int n = coord->size();
  // assign[r]: (leaf index in rank r's list, slice index) pairs that rank r writes.
  std::vector<boost::json::array> assign(static_cast<std::size_t>(n));
  std::unordered_map<std::string, std::size_t> by_path;
  // Per global leaf: the regions already placed (a region several ranks hold is written once,
  // by the lowest of them) and how many slices each rank writes (its local leaf numbers).
  struct placed {
    std::set<std::pair<ckpt::shape, ckpt::shape>> regions;
    std::unordered_map<int, std::size_t> per_rank;
  };
  std::vector<placed> slots;
  for (int r = 0; r < n; ++r) {
    auto m = parse_message(descriptions[static_cast<std::size_t>(r)], "plan");
    if (!m) return error_message(m.error());
    auto ok = message_outcome(m.value(), "rank " + std::to_string(r) + ": ");
    if (!ok) return error_message(ok.error());
    const auto* list = m.value().if_contains("leaves");
    if (!list || !list->is_array()) return error_message(error(errc::collective_failed, "plan"));
    std::size_t li = 0;
    for (const auto& v : list->as_array()) {
      const auto& o = v.as_object();
      const std::string path(o.at("path").as_string());
      auto dt = parse_dtype(std::string_view(o.at("dtype").as_string()));
      auto sh = shape_from(o.at("shape"));
      if (!dt || !sh) return error_message(error(errc::collective_failed, "plan: bad leaf"));
      const bool replicated = o.at("replicated").as_bool();
      auto [it, fresh] = by_path.emplace(path, ix.leaves.size());
      if (fresh) {
        format::sharded_leaf_entry le;
        le.path = path;
        le.dtype = dt.value();
        le.shape = sh.value();
        le.replicated = replicated;
        le.num_bytes = byte_size(le.dtype, le.shape).value();
        ix.leaves.push_back(std::move(le));
        slots.emplace_back();
      }
      auto& le = ix.leaves[it->second];
      if (le.dtype != dt.value() || le.shape != sh.value() || le.replicated != replicated) {
        return error_message(
            error(errc::invalid_argument,
                  "leaf \"" + path + "\": ranks disagree: " + std::string(dtype_name(le.dtype)) +
                      shape_to_string(le.shape) + (le.replicated ? " replicated" : "") +
                      " on a lower rank, " + std::string(dtype_name(dt.value())) +
                      shape_to_string(sh.value()) + (replicated ? " replicated" : "") +
                      " on rank " + std::to_string(r)));
      }
      std::size_t si = 0;
      for (const auto& sv : o.at("slices").as_array()) {
        auto off = shape_from(sv.as_array().at(0));
        auto ext = shape_from(sv.as_array().at(1));
        if (!off || !ext) return error_message(error(errc::collective_failed, "plan: bad slice"));
        format::box b{off.value(), ext.value()};
        auto& ss = slots[it->second];
        if (ss.regions.emplace(b.offset, b.extent).second) {  // ranks ascend: the lowest wins
          auto& cnt = ss.per_rank[r];
          le.slices.push_back({b, static_cast<std::uint32_t>(r), local_leaf_path(path, cnt++)});
          assign[static_cast<std::size_t>(r)].push_back(boost::json::array{li, si});
        }
        ++si;
      }
      ++li;
    }
  }
  for (const auto& le : ix.leaves) {
    std::vector<format::box> boxes;
    for (const auto& s : le.slices)
      boxes.push_back(s.where);
    auto c = format::check_partition(le.shape, boxes, "leaf \"" + le.path + "\"",
                                     errc::invalid_argument);
    if (!c) return error_message(c.error());
  }
  // The temporary directory every rank writes into.
  const bool overwrite = options.local.overwrite;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !overwrite) {
    return error_message(error(errc::already_exists, path.string() +
                                                         " already exists (pass "
                                                         "save_options::overwrite to replace it)"));
  }
  tmp_name = checkpoint::temp_name(name, checkpoint::unique_suffix());
  auto made = detail::run_blocking(rt->executor(), make_temporary(rt->io(), parent, tmp_name));
  if (!made) return error_message(made.error());
  boost::json::array all;
  for (auto& a : assign)
    all.push_back(std::move(a));
  return boost::json::serialize(
      boost::json::object{{"ok", true}, {"tmp", tmp_name}, {"assign", std::move(all)}});
}

result<void> sharded_save_handle::state::commit(const std::vector<std::string>& manifests,
                                                format::sharded_index& ix,
                                                const std::string& tmp_name, std::uint64_t& logical,
                                                std::uint64_t& stored) {
  const fs::path tmp = parent / tmp_name;
  // Every rank's outcome, then its COMMIT as rank 0 sees it on the shared file system.
  std::vector<boost::json::object> ms;
  for (std::size_t r = 0; r < manifests.size(); ++r) {
    CKPT_TRY(auto m, parse_message(manifests[r], "manifest"));
    CKPT_TRY(message_outcome(m, "rank " + std::to_string(r) + ": "));
    ms.push_back(std::move(m));
  }
  stored = 0;
  for (std::size_t r = 0; r < ms.size(); ++r) {
    const std::string dir = format::rank_dir_name(static_cast<std::uint32_t>(r));
    const auto& m = ms[r];
    auto want_h = format::parse_checksum_hex(std::string_view(m.at("commit_xxh3").as_string()));
    const auto want_bytes = m.at("commit_bytes").to_number<std::uint64_t>();
    CKPT_TRY(auto got, commit_of(tmp / dir));
    if (!want_h || got.bytes != want_bytes || got.xxh3 != want_h.value()) {
      return fail(errc::corrupt, (tmp / dir).string() + "/COMMIT is not the one rank " +
                                     std::to_string(r) + " wrote (size " +
                                     std::to_string(got.bytes) + ", checksum " +
                                     format::checksum_hex(got.xxh3) + ", the rank reported " +
                                     std::to_string(want_bytes) + " bytes)");
    }
    CKPT_TRY(bool committed, is_committed(tmp / dir));
    if (!committed) {
      return fail(errc::not_committed, (tmp / dir).string() + " is not a committed checkpoint");
    }
    ix.ranks.push_back({dir, got.bytes, got.xxh3});
    stored += m.at("stored_bytes").to_number<std::uint64_t>();
  }
  logical = 0;
  for (const auto& le : ix.leaves)
    logical += le.num_bytes;

  // metadata.json, job.json, sharded-index.json, then COMMIT: the commit protocol of
  // checkpoint/durable.hpp, on the runtime's engine (this thread blocks on it).
  format::sharded_commit cm;
  std::string meta = boost::json::serialize(metadata);
  std::string index_json = format::encode_sharded_index(ix);
  cm.metadata_bytes = meta.size();
  cm.metadata_xxh3 = format::checksum(std::as_bytes(std::span(meta)));
  cm.index_bytes = index_json.size();
  cm.index_xxh3 = format::checksum(std::as_bytes(std::span(index_json)));
  std::string job;
  if (options.local.job) {
    job = boost::json::serialize(*options.local.job);
    cm.has_job = true;
    cm.job_bytes = job.size();
    cm.job_xxh3 = format::checksum(std::as_bytes(std::span(job)));
  }
  cm.ranks = ix.ranks.size();
  cm.logical_bytes = logical;
  cm.stored_bytes = stored;
  cm.created_unix_ns = unix_ns();
  checkpoint::commit_request rq;
  rq.parent = parent;
  rq.tmp_name = tmp_name;
  rq.name = name;
  rq.files.push_back({std::string(format::metadata_file), std::move(meta)});
  if (cm.has_job) rq.files.push_back({std::string(format::job_file), std::move(job)});
  rq.files.push_back({std::string(format::sharded_index_file), std::move(index_json)});
  rq.marker = {std::string(format::commit_file), format::encode_sharded_commit(cm)};
  rq.overwrite = options.local.overwrite;
  rq.kill_prefix = "shard_";
  CKPT_TRY(detail::run_blocking(rt->executor(), checkpoint::commit(rt->io(), std::move(rq))));
  return success();
}

result<void> sharded_save_handle::state::protocol() {
  const int rank = coord->rank();
  const int n = coord->size();
  {
    std::lock_guard l(stats_mutex);
    stats.ranks = n;
  }
  // 1. Plan.
  CKPT_TRY(auto descriptions, coord->gather(describe_leaves(leaves), 0));
  format::sharded_index ix;  // rank 0
  std::string tmp_name;      // rank 0 (the others learn it from the plan)
  std::string plan_text;
  if (rank == 0) {
    try {
      plan_text = make_plan(descriptions, ix, tmp_name);
    } catch (const std::exception& e) {
      plan_text = error_message(error(errc::collective_failed, std::string("plan: ") + e.what()));
    }
  }
  CKPT_TRY(plan_text, coord->broadcast(std::move(plan_text), 0));
  CKPT_TRY(auto plan, parse_message(plan_text, "plan"));
  CKPT_TRY(message_outcome(plan, ""));
  // (Every rank leaves here alike: the plan's verdict is the same everywhere.)
  const boost::json::array* assign = nullptr;
  CKPT_TRY(guarded([&]() -> result<void> {
    tmp_name = std::string(plan.at("tmp").as_string());
    assign = &plan.at("assign").as_array().at(static_cast<std::size_t>(rank)).as_array();
    return success();
  }));
  {
    std::lock_guard l(stats_mutex);
    stats.plan_s = since_start();
  }
  testing::kill_point("shard_after_plan");

  // 2. This rank's own checkpoint.
  const fs::path local =
      parent / tmp_name / format::rank_dir_name(static_cast<std::uint32_t>(rank));
  result<void> local_result = success();
  {
    tree t = tree::dict();
    local_result = guarded([&]() -> result<void> {
      for (const auto& p : *assign) {
        const auto li = p.as_array().at(0).to_number<std::size_t>();
        const auto si = p.as_array().at(1).to_number<std::size_t>();
        if (li >= leaves.size() || si >= leaves[li].shards.size()) {
          return fail(errc::collective_failed, "the plan names a slice this rank lacks");
        }
        tree* node = t.get(leaves[li].path);
        if (!node) node = &t.set(leaves[li].path, tree::list());
        node->append(leaves[li].shards[si].data);
      }
      return success();
    });
    save_options lo = options.local;
    lo.job.reset();
    lo.overwrite = false;
    boost::json::object local_meta{
        {"ckpt_sharded", boost::json::object{{"rank", rank}, {"ranks", n}, {"name", name}}}};
    if (local_result && cancel_requested) local_result = fail(errc::cancelled, "cancelled");
    if (local_result) {
      auto h = start_save(local, t, std::move(local_meta), std::move(lo));
      {
        std::lock_guard l(stats_mutex);
        local_save = h;
      }
      if (cancel_requested) h.cancel();
      auto st = h.wait_staged();
      staged_event.set(st);
      local_result = h.wait_committed();
      std::lock_guard l(stats_mutex);
      local_save.reset();
      stats.local = h.stats();
      stats.local_s = since_start();
    } else {
      staged_event.set(local_result);
    }
  }
  testing::kill_point("shard_after_local_commit");
  std::string manifest;
  if (local_result) {
    auto c = commit_of(local);
    if (c) {
      std::lock_guard l(stats_mutex);
      manifest = boost::json::serialize(
          boost::json::object{{"ok", true},
                              {"commit_bytes", c.value().bytes},
                              {"commit_xxh3", format::checksum_hex(c.value().xxh3)},
                              {"logical_bytes", stats.local.logical_bytes},
                              {"stored_bytes", stats.local.stored_bytes}});
    } else {
      local_result = fail(c.error());
    }
  }
  if (!local_result) manifest = error_message(local_result.error());

  // 3. Manifests to rank 0, which checks them and commits (or removes the temporary directory).
  CKPT_TRY(auto manifests, coord->gather(std::move(manifest), 0));
  testing::kill_point("shard_after_manifest");
  std::string verdict;
  if (rank == 0) {
    {
      std::lock_guard l(stats_mutex);
      stats.gathered_s = since_start();
    }
    std::uint64_t logical = 0, stored = 0;
    auto c = guarded([&] { return commit(manifests, ix, tmp_name, logical, stored); });
    if (c) {
      verdict = boost::json::serialize(
          boost::json::object{{"ok", true}, {"logical_bytes", logical}, {"stored_bytes", stored}});
    } else {
      (void)detail::run_blocking(rt->executor(),
                                 checkpoint::remove_tree(rt->io(), parent / tmp_name));
      verdict = error_message(std::move(c).error().with_context("save " + path.string()));
    }
  }
  // 4. The verdict, the same on every rank.
  CKPT_TRY(verdict, coord->broadcast(std::move(verdict), 0));
  CKPT_TRY(auto v, parse_message(verdict, "verdict"));
  CKPT_TRY(message_outcome(v, ""));
  return guarded([&]() -> result<void> {
    std::lock_guard l(stats_mutex);
    stats.logical_bytes = v.at("logical_bytes").to_number<std::uint64_t>();
    stats.stored_bytes = v.at("stored_bytes").to_number<std::uint64_t>();
    if (rank != 0) stats.gathered_s = stats.local_s;
    return success();
  });
}

void sharded_save_handle::state::run() {
  coord->turns().wait(ticket);
  result<void> r = guarded([&] { return protocol(); });
  coord->turns().done(ticket);
  // Dropped before anyone is told: the caller's reference is then the last, so that an MPI
  // coordinator is destroyed (and MPI finalised) on the caller's thread, not on this one.
  coord.reset();
  if (!r && r.error().message().find(path.string()) == std::string::npos) {
    r = fail(std::move(r).error().with_context("save " + path.string()));
  }
  {
    std::lock_guard l(stats_mutex);
    stats.committed_s = since_start();
  }
  staged_event.set(r);  // no-op when already staged
  committed_event.set(std::move(r));
}

sharded_save_handle start_sharded_save(std::shared_ptr<coordinator> coord, fs::path path,
                                       std::vector<sharded_leaf> leaves,
                                       boost::json::object metadata, sharded_save_options options) {
  auto s = std::make_shared<sharded_save_handle::state>();
  s->coord = std::move(coord);
  s->path = fs::absolute(path).lexically_normal();
  if (!s->path.has_filename() && s->path.has_parent_path()) s->path = s->path.parent_path();
  s->parent = s->path.parent_path();
  s->name = s->path.filename().string();
  s->leaves = std::move(leaves);
  s->metadata = std::move(metadata);
  s->options = std::move(options);
  s->rt = runtime_or_global(s->options.local.runtime);
  if (!s->coord) {
    auto e = error(errc::invalid_argument, "save " + s->path.string() + ": no coordinator");
    s->staged_event.set(fail(e));
    s->committed_event.set(fail(e));
    return detail::access::handle<sharded_save_handle>(s);
  }
  s->ticket = s->coord->turns().take();
  // The thread owns the state; it ends when the protocol does (wait for committed before the
  // coordinator goes away).
  std::thread([s] { s->run(); }).detach();
  return detail::access::handle<sharded_save_handle>(s);
}

asio::awaitable<result<void>> sharded_save_handle::staged() const {
  co_return co_await state_->staged_event.async_wait(asio::use_awaitable);
}
asio::awaitable<result<void>> sharded_save_handle::committed() const {
  co_return co_await state_->committed_event.async_wait(asio::use_awaitable);
}
result<void> sharded_save_handle::wait_staged() const {
  return state_->staged_event.wait();
}
result<void> sharded_save_handle::wait_committed() const {
  return state_->committed_event.wait();
}
bool sharded_save_handle::is_done() const noexcept {
  return state_->committed_event.is_set();
}
void sharded_save_handle::cancel() const noexcept {
  state_->cancel_requested = true;
  std::lock_guard l(state_->stats_mutex);
  if (state_->local_save) state_->local_save->cancel();
}
sharded_save_stats sharded_save_handle::stats() const {
  std::lock_guard l(state_->stats_mutex);
  return state_->stats;
}
const fs::path& sharded_save_handle::path() const noexcept {
  return state_->path;
}

asio::awaitable<result<sharded_save_stats>> save_sharded(std::shared_ptr<coordinator> coord,
                                                         fs::path path,
                                                         std::vector<sharded_leaf> leaves,
                                                         boost::json::object metadata,
                                                         sharded_save_options options) {
  auto h = start_sharded_save(std::move(coord), std::move(path), std::move(leaves),
                              std::move(metadata), std::move(options));
  CKPT_CO_TRY(co_await h.committed());
  co_return h.stats();
}

result<sharded_save_stats> save_sharded_blocking(std::shared_ptr<coordinator> coord, fs::path path,
                                                 std::vector<sharded_leaf> leaves,
                                                 boost::json::object metadata,
                                                 sharded_save_options options) {
  auto h = start_sharded_save(std::move(coord), std::move(path), std::move(leaves),
                              std::move(metadata), std::move(options));
  CKPT_TRY(h.wait_committed());
  return h.stats();
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

namespace {

// Copies the elements of region `I` out of a saved slice `S` (C order) into a wanted slice `T`
// (C order), all of one dtype. The copy is a sequence of runs, each contiguous in both: the
// trailing dimensions where I spans both S and T whole merge into one run. Run j's offsets
// follow from its index, so a chunk's runs are found by binary search, never listed.
struct region_copy {
  std::size_t k = 0;                                  // dimensions [0, k) enumerate runs
  std::uint64_t runs = 0;                             // number of runs
  std::uint64_t run_bytes = 0;                        // bytes per run
  std::uint64_t src0 = 0, dst0 = 0;                   // byte offsets of run 0
  std::vector<std::uint64_t> count;                   // I's extents in dims [0, k)
  std::vector<std::uint64_t> src_stride, dst_stride;  // bytes, dims [0, k)
  std::byte* dst = nullptr;

  region_copy(const format::box& i, const format::box& s, const format::box& t, std::size_t es,
              std::byte* dest)
      : dst(dest) {
    const std::size_t n = i.offset.size();
    std::vector<std::uint64_t> ss(n, es), ts(n, es);  // byte strides
    for (std::size_t d = n; d-- > 1;) {
      ss[d - 1] = ss[d] * static_cast<std::uint64_t>(s.extent[d]);
      ts[d - 1] = ts[d] * static_cast<std::uint64_t>(t.extent[d]);
    }
    for (std::size_t d = 0; d < n; ++d) {
      src0 += static_cast<std::uint64_t>(i.offset[d] - s.offset[d]) * ss[d];
      dst0 += static_cast<std::uint64_t>(i.offset[d] - t.offset[d]) * ts[d];
    }
    k = n == 0 ? 0 : n - 1;
    while (k > 0 && i.extent[k] == s.extent[k] && i.extent[k] == t.extent[k])
      --k;
    run_bytes = es;
    for (std::size_t d = k; d < n; ++d)
      run_bytes *= static_cast<std::uint64_t>(i.extent[d]);
    runs = 1;
    for (std::size_t d = 0; d < k; ++d) {
      count.push_back(static_cast<std::uint64_t>(i.extent[d]));
      src_stride.push_back(ss[d]);
      dst_stride.push_back(ts[d]);
      runs *= static_cast<std::uint64_t>(i.extent[d]);
    }
  }
  void offsets(std::uint64_t j, std::uint64_t& src, std::uint64_t& dst_off) const {
    src = src0;
    dst_off = dst0;
    for (std::size_t d = k; d-- > 0;) {
      const std::uint64_t x = j % count[d];
      j /= count[d];
      src += x * src_stride[d];
      dst_off += x * dst_stride[d];
    }
  }
  std::uint64_t begin() const { return src0; }
  std::uint64_t end() const {
    std::uint64_t s, d;
    offsets(runs - 1, s, d);
    return s + run_bytes;
  }
  // Raw bytes [off, off + raw.size()) of S arrived: copy the parts of runs inside them.
  void operator()(std::uint64_t off, std::span<const std::byte> raw) const {
    const std::uint64_t hi = off + raw.size();
    // The first run that ends after `off`.
    std::uint64_t lo_j = 0, hi_j = runs;
    while (lo_j < hi_j) {
      const std::uint64_t mid = lo_j + (hi_j - lo_j) / 2;
      std::uint64_t s, d;
      offsets(mid, s, d);
      if (s + run_bytes <= off) {
        lo_j = mid + 1;
      } else {
        hi_j = mid;
      }
    }
    for (std::uint64_t j = lo_j; j < runs; ++j) {
      std::uint64_t s, d;
      offsets(j, s, d);
      if (s >= hi) break;
      const std::uint64_t a = std::max(s, off), b = std::min(s + run_bytes, hi);
      std::memcpy(dst + d + (a - s), raw.data() + (a - off), b - a);
    }
  }
};

// The saved slices of one leaf that may overlap a region: sorted along the dimension where
// they have the most distinct offsets (the slicing dimension), so a lookup is a binary search
// plus the overlapping neighbours, not a scan of every rank's slice.
class slice_finder {
 public:
  explicit slice_finder(const format::sharded_leaf_entry& le) : le_(le) {
    order_.resize(le.slices.size());
    for (std::size_t i = 0; i < order_.size(); ++i)
      order_[i] = i;
    if (le.shape.empty() || order_.size() < 16) return;  // a scan is as good
    std::size_t best_distinct = 0;
    for (std::size_t d = 0; d < le.shape.size(); ++d) {
      std::set<std::int64_t> offs;
      for (const auto& sl : le.slices)
        offs.insert(sl.where.offset[d]);
      if (offs.size() > best_distinct) dim_ = d, best_distinct = offs.size();
    }
    std::sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
      return le.slices[a].where.offset[dim_] < le.slices[b].where.offset[dim_];
    });
    for (const auto& sl : le.slices)
      max_extent_ = std::max(max_extent_, sl.where.extent[dim_]);
    sorted_ = true;
  }
  template <class F>
  void for_each_candidate(const format::box& t, F&& f) const {
    if (!sorted_) {
      for (auto i : order_)
        f(le_.slices[i]);
      return;
    }
    const std::int64_t lo = t.offset[dim_] - max_extent_ + 1, hi = t.offset[dim_] + t.extent[dim_];
    auto first = std::lower_bound(
        order_.begin(), order_.end(), lo,
        [&](std::size_t i, std::int64_t v) { return le_.slices[i].where.offset[dim_] < v; });
    for (auto it = first; it != order_.end() && le_.slices[*it].where.offset[dim_] < hi; ++it)
      f(le_.slices[*it]);
  }

 private:
  const format::sharded_leaf_entry& le_;
  std::vector<std::size_t> order_;
  std::size_t dim_ = 0;
  std::int64_t max_extent_ = 0;
  bool sorted_ = false;
};

// What one rank's checkpoint must deliver.
struct rank_reads {
  std::uint32_t rank = 0;
  std::vector<detail::range_read> reads;
  std::vector<std::shared_ptr<region_copy>> copies;
  std::shared_ptr<detail::ranged_checkpoint> opened;
};

// Runs `make(i)` for i in [0, n), at most `width` at once, on `ex`; the first error wins.
template <class Make>
asio::awaitable<result<void>> bounded_all(asio::any_io_executor ex, std::size_t n,
                                          std::size_t width, Make make) {
  for (std::size_t i = 0; i < n; i += width) {
    std::vector<asio::awaitable<result<void>>> ops;
    for (std::size_t j = i; j < std::min(n, i + width); ++j)
      ops.push_back(make(j));
    CKPT_CO_TRY(co_await detail::when_all(ex, std::move(ops)));
  }
  co_return success();
}

asio::awaitable<result<void>> open_rank(std::shared_ptr<runtime> rt, fs::path dir,
                                        detail::expected_commit commit, rank_reads* rr) {
  CKPT_CO_TRY(rr->opened, co_await detail::open_for_ranges(rt, dir, commit, rr->reads));
  co_return success();
}

asio::awaitable<result<void>> read_rank(std::shared_ptr<runtime> rt, rank_reads* rr,
                                        load_options options) {
  co_return co_await detail::read_ranges(rt, rr->opened, rr->reads, options);
}

result<detail::checkpoint_files> open_sharded(const fs::path& path) {
  CKPT_TRY(auto cf, detail::read_checkpoint_files(path));
  if (!cf.sharded()) {
    if (cf.committed()) {
      return fail(errc::invalid_argument,
                  path.string() + " is an ordinary checkpoint, not a sharded one (use load)");
    }
    return fail(detail::first_problem(path, cf));
  }
  if (!cf.committed()) return fail(detail::first_problem(path, cf));
  return cf;
}

asio::awaitable<result<sharded_loaded>> load_sharded_impl(std::shared_ptr<runtime> rt,
                                                          fs::path path,
                                                          std::vector<sharded_leaf> wanted,
                                                          load_options opt) {
  const std::string where = path.string();
  CKPT_CO_TRY(auto cf, open_sharded(path));
  const format::sharded_index& ix = *cf.sharded_index;
  std::unordered_map<std::string_view, std::size_t> by_path;
  for (std::size_t i = 0; i < ix.leaves.size(); ++i)
    by_path.emplace(ix.leaves[i].path, i);

  // Match the request against the index; every mismatch at once.
  std::vector<std::string> problems;
  std::vector<sharded_leaf> kept;
  std::vector<std::size_t> kept_index;
  for (auto& w : wanted) {
    CKPT_CO_TRYV_CTX(check_leaf(w, false), "load " + where);
    auto it = by_path.find(w.path);
    if (it == by_path.end()) {
      if (!opt.partial) {
        problems.push_back("missing in checkpoint: \"" + w.path + "\" (wanted " +
                           std::string(dtype_name(w.dtype)) + shape_to_string(w.global_shape) +
                           ")");
      }
      continue;
    }
    const auto& le = ix.leaves[it->second];
    if (le.dtype != w.dtype || le.shape != w.global_shape) {
      if (!opt.partial) {
        problems.push_back("\"" + w.path + "\": wanted " + std::string(dtype_name(w.dtype)) +
                           shape_to_string(w.global_shape) + ", checkpoint " +
                           std::string(dtype_name(le.dtype)) + shape_to_string(le.shape));
      }
      continue;
    }
    kept.push_back(std::move(w));
    kept_index.push_back(it->second);
  }
  if (!problems.empty()) {
    std::string msg = where + ": the wanted leaves do not match the checkpoint (" +
                      std::to_string(problems.size()) + " mismatch" +
                      (problems.size() == 1 ? "" : "es") + "):";
    for (const auto& p : problems)
      msg += "\n  " + p;
    co_return fail(errc::template_mismatch, std::move(msg));
  }

  // Destinations: in place where writable, allocated otherwise (bounded by the request).
  for (auto& l : kept) {
    for (auto& s : l.shards) {
      if (s.data.is_writable() && !s.data.is_spec() && s.data.num_bytes() > 0) continue;
      try {
        auto z = array::zeros(l.dtype, s.where.extent);
        if (!z) co_return fail(z.error());
        s.data = std::move(z.value());
      } catch (const std::bad_alloc&) {
        co_return fail(errc::limit_exceeded,
                       where + ": leaf \"" + l.path + "\": cannot allocate " + s.where.to_string());
      }
    }
  }

  // Ranged reads, grouped by the rank whose checkpoint holds the saved slice.
  std::map<std::uint32_t, rank_reads> by_rank;
  for (std::size_t k = 0; k < kept.size(); ++k) {
    const auto& le = ix.leaves[kept_index[k]];
    const std::size_t es = dtype_size(le.dtype);
    const slice_finder finder(le);
    for (auto& s : kept[k].shards) {
      const format::box t = to_box(s.where);
      if (!box_nonempty(t)) continue;
      finder.for_each_candidate(t, [&](const format::slice_entry& saved) {
        format::box i;
        if (!box_nonempty(saved.where) || !box_intersect(t, saved.where, i)) return;
        auto copy =
            std::make_shared<region_copy>(i, saved.where, t, es, s.data.mutable_bytes().data());
        auto& rr = by_rank[saved.rank];
        rr.rank = saved.rank;
        detail::range_read r;
        r.leaf = saved.leaf;
        r.dtype = le.dtype;
        r.shape = saved.where.extent;
        r.begin = copy->begin();
        r.end = copy->end();
        r.sink = [c = copy.get()](std::uint64_t off, std::span<const std::byte> raw) {
          (*c)(off, raw);
        };
        rr.reads.push_back(std::move(r));
        rr.copies.push_back(std::move(copy));
      });
    }
  }
  std::vector<rank_reads*> todo;
  for (auto& [r, rr] : by_rank)
    todo.push_back(&rr);
  auto ex = co_await asio::this_coro::executor;
  constexpr std::size_t width = 8;  // rank checkpoints validated / read at once
  // Every needed rank checkpoint validated before any byte is copied.
  CKPT_CO_TRY(co_await bounded_all(ex, todo.size(), width, [&](std::size_t i) {
    const auto& re = ix.ranks[todo[i]->rank];
    return open_rank(rt, path / re.dir, detail::expected_commit{re.commit_bytes, re.commit_xxh3},
                     todo[i]);
  }));
  CKPT_CO_TRY(co_await bounded_all(ex, todo.size(), width,
                                   [&](std::size_t i) { return read_rank(rt, todo[i], opt); }));
  sharded_loaded out;
  out.leaves = std::move(kept);
  out.metadata = std::move(*cf.metadata);
  out.job = std::move(cf.job);
  co_return out;
}

result<std::vector<sharded_leaf>> whole_leaves(const format::sharded_index& ix) {
  std::vector<sharded_leaf> wanted;
  for (const auto& le : ix.leaves) {
    CKPT_TRY(auto l, sharded_leaf::spec(le.path, le.dtype, le.shape, {whole(le.shape)}));
    wanted.push_back(std::move(l));
  }
  return wanted;
}

// A dict nested along the leaves' paths.
result<tree> nest(std::vector<sharded_leaf>& leaves) {
  tree root = tree::dict();
  for (auto& l : leaves) {
    CKPT_TRY(auto parts, split_path(l.path));
    tree* node = &root;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      tree* child = node->get(parts[i]);
      if (!child) child = &node->set(parts[i], tree::dict());
      if (!child->is_dict()) {
        return fail(errc::corrupt, "leaf \"" + l.path + "\" lies below another leaf");
      }
      node = child;
    }
    node->set(parts.back(), std::move(l.shards.front().data));
  }
  return root;
}

asio::awaitable<result<loaded_checkpoint>> load_full_impl(std::shared_ptr<runtime> rt,
                                                          fs::path path, load_options opt) {
  CKPT_CO_TRY(auto cf, open_sharded(path));
  CKPT_CO_TRY(auto wanted, whole_leaves(*cf.sharded_index));
  opt.partial = false;
  CKPT_CO_TRY(auto got, co_await load_sharded_impl(rt, path, std::move(wanted), opt));
  loaded_checkpoint out;
  CKPT_CO_TRY(out.tree, nest(got.leaves));
  out.metadata = std::move(got.metadata);
  out.job = std::move(got.job);
  co_return out;
}

}  // namespace

asio::awaitable<result<sharded_loaded>> load_sharded(fs::path path,
                                                     std::vector<sharded_leaf> wanted,
                                                     load_options options) {
  auto rt = runtime_or_global(options.runtime);
  co_return co_await detail::run_on(
      rt->executor(), load_sharded_impl(rt, std::move(path), std::move(wanted), options));
}

result<sharded_loaded> load_sharded_blocking(fs::path path, std::vector<sharded_leaf> wanted,
                                             load_options options) {
  auto rt = runtime_or_global(options.runtime);
  return detail::run_blocking(rt->executor(),
                              load_sharded_impl(rt, std::move(path), std::move(wanted), options));
}

asio::awaitable<result<loaded_checkpoint>> load_sharded_full(fs::path path, load_options options) {
  auto rt = runtime_or_global(options.runtime);
  co_return co_await detail::run_on(rt->executor(), load_full_impl(rt, std::move(path), options));
}

result<loaded_checkpoint> load_sharded_full_blocking(fs::path path, load_options options) {
  auto rt = runtime_or_global(options.runtime);
  return detail::run_blocking(rt->executor(), load_full_impl(rt, std::move(path), options));
}

// ---------------------------------------------------------------------------------------------
// Info
// ---------------------------------------------------------------------------------------------

result<sharded_info> read_sharded_info(const fs::path& path) {
  CKPT_TRY(auto cf, open_sharded(path));
  sharded_info info;
  const auto& ix = *cf.sharded_index;
  const auto& cm = *cf.sharded_commit;
  info.ranks = static_cast<int>(ix.ranks.size());
  for (const auto& le : ix.leaves) {
    sharded_leaf_info li;
    li.path = le.path;
    li.dtype = le.dtype;
    li.global_shape = le.shape;
    li.replicated = le.replicated;
    li.num_bytes = le.num_bytes;
    for (const auto& s : le.slices)
      li.slices.push_back({{s.where.offset, s.where.extent}, static_cast<int>(s.rank)});
    info.leaves.push_back(std::move(li));
  }
  info.metadata = std::move(*cf.metadata);
  info.job = std::move(cf.job);
  info.logical_bytes = cm.logical_bytes;
  info.stored_bytes = cm.stored_bytes;
  info.created_unix_ns = cm.created_unix_ns;
  return info;
}

result<bool> is_sharded_checkpoint(const fs::path& path) {
  auto cf = detail::read_checkpoint_files(path);
  if (!cf) {
    if (cf.error() == errc::not_found || cf.error() == std::errc::not_a_directory) return false;
    return fail(cf.error());
  }
  return cf.value().sharded() && cf.value().committed();
}

}  // namespace ckpt
