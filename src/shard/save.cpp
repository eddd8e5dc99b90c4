// Sharded checkpoints: the collective save protocol (see the top of ckpt/shard.hpp and
// docs/FORMAT.md, "Sharded checkpoints").
//
// The protocol runs on a thread of its own per save, because coordinator collectives block;
// the rank's own checkpoint is written by save.hpp's pipeline on the runtime. Every rank runs
// the same four collectives in the same order whatever happens locally (gather of leaf
// descriptions, broadcast of the plan, gather of manifests, broadcast of the verdict), except
// that a failed plan ends the save on every rank right after its broadcast. Messages are JSON.
// Rank 0 commits through checkpoint::commit on the save's runtime.
#include "checkpoint/durable.hpp"
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "format/sharded.hpp"
#include "io/async.hpp"
#include "pipeline/load_ranges.hpp"
#include "pipeline/runtime_impl.hpp"
#include "shard/common.hpp"
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
using shard_detail::check_leaf;
using shard_detail::unix_ns;

namespace {

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

// The parent directories (durable) and the temporary directory every rank writes into.
asio::awaitable<result<void>> make_temporary(io::engine& io, fs::path parent, std::string tmp) {
  CKPT_CO_TRY(co_await checkpoint::make_directories(io, parent));
  const std::string where = (parent / tmp).string();
  CKPT_CO_TRYV_CTX(co_await io.mkdir(AT_FDCWD, where, 0755), "create " + where);
  co_return success();
}

// The size and checksum of `dir/COMMIT`, read through `rt`'s engine (this thread blocks).
result<detail::expected_commit> commit_of(const fs::path& dir, const std::shared_ptr<runtime>& rt) {
  CKPT_TRY(std::string text,
           checkpoint::read_small_file_blocking(dir / std::string(format::commit_file),
                                                checkpoint::max_commit_file, rt));
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
  // The writer never commits what a reader refuses: the sharded index as it will be written
  // (the ranks' commit markers stand in as empty until they exist) goes through the reader's
  // parser and caps now, before any rank writes a byte.
  for (int r = 0; r < n; ++r)
    ix.ranks.push_back({format::rank_dir_name(static_cast<std::uint32_t>(r)), 0, 0});
  auto readable = format::parse_sharded_index(format::encode_sharded_index(ix));
  ix.ranks.clear();
  if (!readable) {
    const errc code =
        readable.error() == errc::limit_exceeded ? errc::limit_exceeded : errc::invalid_argument;
    return error_message(error(code, "a reader would refuse this save's " +
                                         std::string(format::sharded_index_file) + ": " +
                                         readable.error().message()));
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
    CKPT_TRY(auto got, commit_of(tmp / dir, rt));
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
    // A differential sharded save: each rank against the base's checkpoint of the same rank.
    if (!lo.base.empty()) lo.base /= format::rank_dir_name(static_cast<std::uint32_t>(rank));
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
    auto c = commit_of(local, rt);
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
  std::error_code ec;
  if (!path.empty()) s->path = fs::absolute(path, ec).lexically_normal();
  if (path.empty() || ec) {
    // (Every rank is given the same path: every rank refuses it, none enters a collective.)
    auto e = error(errc::invalid_argument, "sharded save: checkpoint path \"" + path.string() +
                                               "\" is not usable" +
                                               (ec ? " (" + ec.message() + ")" : " (empty)"));
    s->staged_event.set(fail(e));
    s->committed_event.set(fail(e));
    return detail::access::handle<sharded_save_handle>(s);
  }
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

}  // namespace ckpt
