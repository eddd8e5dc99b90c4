// ckpt/job.hpp - the job lifecycle: execution specs, jobs that save and restore checkpoints,
// the LATEST pointer and resuming a job from its own (or another job's) checkpoint.
//
// Mirrors the seed's `job` module (docs: shared/seed/job-api.txt):
//   basic_job<C>         a job with a spec and a config C; `done()` idempotency; `run()`.
//   checkpointed_job<C>  save/load trees and metadata under `checkpoints_dir / rel_path`.
//   restoreable_job<C>   `restore_from_path` (yours), LATEST, listing, from_checkpoint, retention.
//
// Paths: a checkpoint lives at `checkpoints_dir / rel_path`; a job's own checkpoints use
// `rel_path = project / group / job_name / suffix`. The `*_from_path` functions take any
// rel_path (e.g. another job's checkpoint); relative paths that would leave checkpoints_dir
// (`..`, absolute, empty) fail with `errc::path_escape`.
//
// Config types convert through Boost.JSON `value_from` / `value_to`: structs described with
// BOOST_DESCRIBE_STRUCT work out of the box, others need `tag_invoke` overloads.
//
// Coroutines here never co_await an expression that creates temporaries with destructors (a
// by-value path argument, a string): GCC 12 may destroy such temporaries twice. They build the
// awaitable into a named local first (`auto op = f(args); co_await std::move(op);`).
//
// Multi-host jobs: give the job a coordinator (ckpt/coordinator.hpp; MPI in production) with
// `set_coordinator`. Its rank and size become the spec's host index and count; the sharded
// save/load methods (`save_sharded_tree_and_metadata`, `get_sharded_tree_and_metadata`, see
// ckpt/shard.hpp) run through it; and the job-directory writes that must happen once
// (LATEST, DONE, start-up cleanup, retention) are done by host 0 alone, every host returning the
// same outcome.
//
// Threads: a job object is not thread-safe; use it from one thread (or one strand) at a time.
// The lifecycle methods are awaitables (save, restore, register_latest, latest, checkpoints, ...),
// each with a `_blocking` form. Functions that touch the store synchronously (the `_blocking`
// forms, mark_done, cleanup_stale) block the calling thread on small metadata IO run by a runtime's
// engine (the job's `save_defaults().runtime`, or the `rt` argument; null:
// `ckpt::runtime::global()`): never call them from one of that runtime's own threads.
#pragma once

#include <ckpt/coordinator.hpp>
#include <ckpt/error.hpp>
#include <ckpt/load.hpp>
#include <ckpt/save.hpp>
#include <ckpt/shard.hpp>
#include <ckpt/store.hpp>
#include <ckpt/tree.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace ckpt {

/// Where the job's files live and which host of the job this process is.
struct cluster_config {
  /// The root of every job's checkpoints (a file system every host shares).
  std::filesystem::path checkpoints_dir;
  /// This process's host index in [0, host_count). Set from a coordinator by
  /// `basic_job::set_coordinator` (or `hosts_from`).
  std::uint32_t host_index = 0;
  std::uint32_t host_count = 1;
  friend bool operator==(const cluster_config&, const cluster_config&) = default;

  /// host_index and host_count from `c` (its rank and size).
  void hosts_from(const coordinator& c) noexcept {
    host_index = static_cast<std::uint32_t>(c.rank());
    host_count = static_cast<std::uint32_t>(c.size());
  }
};

/// The identity of a job run (the seed's ExecutionSpec). `project`, `group` and `job_name`
/// locate the job's directory; `run_id` identifies the run (the seed's wandb run id).
struct execution_spec {
  std::string project;
  std::string group;
  std::string job_name;
  std::string run_id;
  cluster_config cluster;
  friend bool operator==(const execution_spec&, const execution_spec&) = default;

  /// `project / group / job_name`. Errors (`errc::invalid_argument`) when a part is empty, is
  /// `.` or `..`, starts with '.', or holds '/' or NUL.
  result<std::filesystem::path> job_rel_path() const;
  /// The absolute job directory `checkpoints_dir / project / group / job_name`.
  result<std::filesystem::path> job_dir() const;
  /// `project / group / job_name / suffix` (suffix checked like any rel_path).
  result<std::filesystem::path> rel_path(const std::filesystem::path& suffix) const;
  /// The absolute `checkpoints_dir / rel_path`; `errc::path_escape` when rel_path leaves it.
  result<std::filesystem::path> resolve(const std::filesystem::path& rel_path) const;
};
using ExecutionSpec = execution_spec;

/// JSON: {"project", "group", "job_name", "run_id", "cluster": {"checkpoints_dir",
/// "host_index", "host_count"}}.
void tag_invoke(boost::json::value_from_tag, boost::json::value& out, const execution_spec& s);
/// Throws std::system_error (as value_to does) on malformed input; see spec_from_json.
execution_spec tag_invoke(boost::json::value_to_tag<execution_spec>, const boost::json::value& v);
/// The non-throwing form: `errc::invalid_argument` naming the bad field. Missing `run_id` and
/// `cluster` fields take their defaults; the other fields are required.
result<execution_spec> spec_from_json(const boost::json::value& v);

/// RFC 7386 JSON merge patch: when `patch` is an object, its members are merged into `target`
/// (made an object if it is not one) recursively, a null member deletes the key; any other
/// `patch` replaces `target`. Returns the patched value.
boost::json::value json_merge_patch(boost::json::value target, const boost::json::value& patch);

namespace detail {

/// value_from(config), with conversion exceptions turned into `errc::invalid_argument`.
template <class C>
result<boost::json::value> config_to_json(const C& config) {
  try {
    return boost::json::value_from(config);
  } catch (const std::exception& e) {
    return fail(errc::invalid_argument, std::string("config to JSON: ") + e.what());
  }
}

/// value_to<C>(v), with conversion exceptions turned into `errc::invalid_argument`.
template <class C>
result<C> config_from_json(const boost::json::value& v) {
  try {
    return boost::json::value_to<C>(v);
  } catch (const std::exception& e) {
    return fail(errc::invalid_argument, std::string("config from JSON: ") + e.what() +
                                            " (config: " + boost::json::serialize(v) + ")");
  }
}

/// Config evolution: fills what `config` lacks from `defaults` (value_from(C{})), objects
/// recursively, so that a field added to the config type takes its default on resume (and a
/// field an overlay deleted with null falls back to it). A key of `config` that `defaults` does
/// not have is an `errc::invalid_argument` naming it (a typo in an overlay, or a field the type
/// no longer has). An empty object in `defaults` (a free-form json::object or map member) is
/// taken as it is.
result<void> fill_config_defaults(boost::json::value& config, const boost::json::value& defaults);

/// The config a restore converts: the saved one (overlay applied) with C's defaults filled in
/// where C is default-constructible.
template <class C>
result<boost::json::value> config_with_defaults(boost::json::value config) {
  if constexpr (std::is_default_constructible_v<C>) {
    CKPT_TRY(auto defaults, config_to_json(C{}));
    CKPT_TRY(fill_config_defaults(config, defaults));
  }
  return config;
}

/// `e` with "<what> <path>" in front, or only "<what>" when its message already names `path`:
/// each layer adds its context once ("load /p: /p/index.json: ..." read twice).
inline error with_path_context(error e, std::string_view what, const std::filesystem::path& path) {
  const std::string p = path.string();
  if (e.message().find(p) != std::string::npos) return std::move(e).with_context(what);
  return std::move(e).with_context(std::string(what) + " " + p);
}

/// The job.json object of a save: {"spec": spec, "config": config}.
boost::json::object make_job_json(const execution_spec& spec, boost::json::value config);
/// The committed checkpoint `spec`'s LATEST names (store::read_latest), or none when there is
/// no LATEST or it is unusable: the default base of a differential save.
std::optional<std::filesystem::path> latest_checkpoint(const execution_spec& spec,
                                                       const std::shared_ptr<runtime>& rt);

/// What from_checkpoint needs from a checkpoint's job.json.
struct checkpoint_identity {
  execution_spec spec;        ///< the spec the restored job gets (see from_checkpoint_path)
  boost::json::value config;  ///< the saved config with `runtime_cfg` merged in
};
/// Reads `ckpt_dir/job.json`, overlays `runtime_cfg` (null: no overlay) on its config and picks
/// the spec: the saved identity when `resume`, else `caller`.
result<checkpoint_identity> read_checkpoint_identity(const std::filesystem::path& ckpt_dir,
                                                     const execution_spec& caller,
                                                     const boost::json::value& runtime_cfg,
                                                     bool resume);

template <class T>
boost::asio::awaitable<void> store_result(std::optional<T>* out, boost::asio::awaitable<T> op) {
  out->emplace(co_await std::move(op));
}

/// Runs `op` to completion on a private io_context in the calling thread (exceptions from `op`
/// are rethrown).
template <class T>
T run_on_private_context(boost::asio::awaitable<T> op) {
  boost::asio::io_context ctx;
  std::optional<T> out;
  std::exception_ptr ex;
  boost::asio::co_spawn(ctx, store_result(&out, std::move(op)),
                        [&](std::exception_ptr e) { ex = e; });
  ctx.run();
  io::wait_for_completions_posted();  // before ctx goes (see io.hpp)
  if (ex) std::rethrow_exception(ex);
  return std::move(*out);
}

}  // namespace detail

/// A job: a spec, a config and a body. Not thread-safe.
template <class C>
class basic_job {
 public:
  using config_type = C;

  /// @param spec the job's identity and location (copied).
  /// @param config the job's configuration (moved in).
  /// Construction does no IO; call cleanup_stale() at start-up when this process is the job's
  /// writer.
  explicit basic_job(execution_spec spec, C config = C{})
      : spec_(std::move(spec)), config_(std::move(config)) {}
  /// A job of a multi-host run: see set_coordinator.
  basic_job(execution_spec spec, C config, std::shared_ptr<ckpt::coordinator> coord)
      : basic_job(std::move(spec), std::move(config)) {
    set_coordinator(std::move(coord));
  }
  basic_job(const basic_job&) = delete;
  basic_job& operator=(const basic_job&) = delete;
  virtual ~basic_job() = default;

  const execution_spec& spec() const noexcept { return spec_; }
  const C& config() const noexcept { return config_; }
  C& config() noexcept { return config_; }

  /// The absolute job directory (see execution_spec::job_dir).
  result<std::filesystem::path> job_dir() const { return spec_.job_dir(); }

  /// Makes this process one host of a multi-host job: the spec's host index and count become
  /// `coord`'s rank and size (`cluster_config::hosts_from`), and the methods that write the job
  /// directory's shared files coordinate through it (see the header comment). Null: a job of one
  /// process again (host index and count left as they are).
  void set_coordinator(std::shared_ptr<ckpt::coordinator> coord) {
    coord_ = std::move(coord);
    if (coord_) spec_.cluster.hosts_from(*coord_);
  }
  const std::shared_ptr<ckpt::coordinator>& coordinator() const noexcept { return coord_; }
  /// True on the host that writes the job directory's shared files (LATEST, DONE, cleanup):
  /// host 0.
  bool is_primary_host() const noexcept { return spec_.cluster.host_index == 0; }

  /// Idempotency check: true when the job was marked complete (a durable `DONE` file in its
  /// directory). IO errors and invalid specs read as false.
  bool done() const noexcept {
    auto dir = spec_.job_dir();
    return dir && store::is_done(dir.value());
  }
  /// Marks the job complete, durably (DONE.tmp, fsync, rename, fsync dir); the file holds the
  /// spec as JSON. Blocking (on `rt`'s engine; null: runtime::global()). With a coordinator:
  /// collective; host 0 writes, every host returns its outcome.
  result<void> mark_done(const std::shared_ptr<ckpt::runtime>& rt = {}) {
    result<void> r = success();
    if (is_primary_host()) {
      auto dir = spec_.job_dir();
      r = dir ? store::mark_done(dir.value(),
                                 boost::json::serialize(boost::json::value_from(spec_)) + "\n", rt)
              : result<void>(fail(dir.error()));
    }
    return agree_if_coordinated(std::move(r));
  }

  /// Removes stale temporary and trash directories (and LATEST.tmp/DONE.tmp) that an earlier,
  /// interrupted process of this job left in its directory; see store::cleanup_stale. Call it
  /// once at start-up, before the first save. Blocking. Only host 0 cleans (another host's
  /// process ids mean nothing there, and a sharded save in flight lives in a temporary directory
  /// of host 0's); the others return an empty report. With a coordinator: collective, so that
  /// no host starts saving before the cleanup is over. `rt`: as for mark_done.
  result<store::cleanup_report> cleanup_stale(const std::shared_ptr<ckpt::runtime>& rt = {}) {
    result<store::cleanup_report> r = store::cleanup_report{};
    if (is_primary_host()) {
      auto dir = spec_.job_dir();
      r = dir ? store::cleanup_stale(dir.value(), rt)
              : result<store::cleanup_report>(fail(dir.error()));
    }
    result<void> ok = success();
    if (!r) ok = fail(r.error());
    CKPT_TRY(agree_if_coordinated(std::move(ok)));
    return r;
  }

  /// The job's body, assuming all hosts have been set up. Runs on the executor it is
  /// co_spawned on; errors come back as the result (exceptions are for programming errors).
  virtual boost::asio::awaitable<result<void>> run() = 0;

  /// Runs run() to completion on a private io_context in the calling thread.
  result<void> run_blocking() { return detail::run_on_private_context(run()); }

 protected:
  /// `local` alone without a coordinator; with one, every host's outcome combined (`agree`).
  result<void> agree_if_coordinated(result<void> local) {
    if (!coord_) return local;
    return agree(*coord_, local);
  }

  execution_spec spec_;
  C config_;
  std::shared_ptr<ckpt::coordinator> coord_;
};

/// A tree and its metadata, as loaded.
struct tree_and_metadata {
  ckpt::tree tree;
  boost::json::object metadata;
  /// The checkpoint's job.json ({"spec", "config"}), when it has one.
  std::optional<boost::json::object> job;
};

/// A job that saves and loads checkpoints under `checkpoints_dir`. Every save also writes the
/// job's spec and config as the checkpoint's job.json.
template <class C>
class checkpointed_job : public basic_job<C> {
 public:
  using basic_job<C>::basic_job;

  /// The absolute path of `spec`'s checkpoint `suffix` (`checkpoints_dir / project / group /
  /// job_name / suffix`), or `errc::path_escape` / `errc::invalid_argument`.
  static result<std::filesystem::path> checkpoint_path(const execution_spec& spec,
                                                       const std::filesystem::path& suffix) {
    CKPT_TRY(auto rel, spec.rel_path(suffix));
    return spec.resolve(rel);
  }

  /// Options every save/load of this job uses (`save_options::job` is always replaced by the
  /// job's own job.json). Default: the library defaults.
  ckpt::save_options& save_defaults() noexcept { return save_defaults_; }
  ckpt::load_options& load_defaults() noexcept { return load_defaults_; }
  /// Differential saves (on by default): a save whose save_defaults() name no `base` shares the
  /// unchanged chunks of the job's latest checkpoint (LATEST), or is written in full where there
  /// is no usable LATEST, or its checkpoint cannot be a base (save_stats::base_note says why).
  /// Sharded saves too: each rank against its part of a sharded LATEST (sharded_save_options).
  void set_differential(bool on) noexcept { differential_ = on; }
  bool differential() const noexcept { return differential_; }

  /// Loads the checkpoint at `checkpoints_dir / rel_path` (any job's) into the shape of
  /// `template_tree`. @param partial restore only the template's leaves that the checkpoint
  /// holds with the same dtype and shape, skipping the rest silently (load_options::partial).
  /// Leaves of the template with writable memory are filled in place: that memory must stay
  /// alive until the await completes. The template itself is taken by value (copying a tree
  /// copies views, never bytes), so a temporary one (`get_tree_and_metadata(s, state())`) is
  /// safe. Resumes on the awaiting coroutine's executor.
  boost::asio::awaitable<result<tree_and_metadata>> get_tree_and_metadata_from_path(
      std::filesystem::path rel_path, tree template_tree, bool partial = false) const {
    auto path = this->spec_.resolve(rel_path);
    if (!path) co_return fail(std::move(path).error());
    auto options = load_defaults_;
    options.partial = partial;
    auto op = ckpt::load(path.value(), &template_tree, std::move(options));
    auto loaded = co_await std::move(op);
    if (!loaded)
      co_return fail(detail::with_path_context(std::move(loaded).error(), "load", path.value()));
    co_return tree_and_metadata{std::move(loaded.value().tree), std::move(loaded.value().metadata),
                                std::move(loaded.value().job)};
  }
  /// The same for this job's own checkpoint `suffix`.
  boost::asio::awaitable<result<tree_and_metadata>> get_tree_and_metadata(
      std::filesystem::path suffix, tree template_tree, bool partial = false) const {
    auto rel = this->spec_.rel_path(suffix);
    if (!rel) co_return fail(std::move(rel).error());
    auto op = get_tree_and_metadata_from_path(rel.value(), std::move(template_tree), partial);
    co_return co_await std::move(op);
  }
  /// Blocking forms.
  result<tree_and_metadata> get_tree_and_metadata_from_path_blocking(std::filesystem::path rel_path,
                                                                     const tree& template_tree,
                                                                     bool partial = false) const {
    return detail::run_on_private_context(
        get_tree_and_metadata_from_path(std::move(rel_path), template_tree, partial));
  }
  result<tree_and_metadata> get_tree_and_metadata_blocking(std::filesystem::path suffix,
                                                           const tree& template_tree,
                                                           bool partial = false) const {
    return detail::run_on_private_context(
        get_tree_and_metadata(std::move(suffix), template_tree, partial));
  }

  /// metadata.json only of the checkpoint at `checkpoints_dir / rel_path`, without opening its
  /// index or data files.
  boost::asio::awaitable<result<boost::json::object>> get_metadata_from_path(
      std::filesystem::path rel_path) const {
    auto path = this->spec_.resolve(rel_path);
    if (!path) co_return fail(std::move(path).error());
    auto op = ckpt::load_metadata(path.value(), load_defaults_.runtime);
    co_return co_await std::move(op);
  }
  /// The same for this job's own checkpoint `suffix`.
  boost::asio::awaitable<result<boost::json::object>> get_metadata(
      std::filesystem::path suffix) const {
    auto rel = this->spec_.rel_path(suffix);
    if (!rel) co_return fail(std::move(rel).error());
    auto op = get_metadata_from_path(rel.value());
    co_return co_await std::move(op);
  }
  result<boost::json::object> get_metadata_from_path_blocking(std::filesystem::path rel) const {
    CKPT_TRY(auto path, this->spec_.resolve(rel));
    return ckpt::load_metadata_blocking(path, load_defaults_.runtime);
  }
  result<boost::json::object> get_metadata_blocking(std::filesystem::path suffix) const {
    CKPT_TRY(auto rel, this->spec_.rel_path(suffix));
    return get_metadata_from_path_blocking(rel);
  }

  /// Starts saving `t` and `metadata` as the checkpoint `checkpoints_dir / rel_path`, with this
  /// job's job.json; returns at once. Await (or wait on) the handle's `staged()` before
  /// changing borrowed leaves of `t`, and its `committed()` before registering it as latest.
  /// Errors: invalid paths and config conversion at once; everything else through the handle.
  result<save_handle> start_save_tree_and_metadata_from_path(std::filesystem::path rel_path,
                                                             const tree& t,
                                                             boost::json::object metadata) {
    CKPT_TRY(auto target, save_target(rel_path));
    return ckpt::start_save(std::move(target.first), t, std::move(metadata),
                            std::move(target.second));
  }
  /// The same for this job's own checkpoint `suffix`.
  result<save_handle> start_save_tree_and_metadata(std::filesystem::path suffix, const tree& t,
                                                   boost::json::object metadata) {
    CKPT_TRY(auto rel, this->spec_.rel_path(suffix));
    return start_save_tree_and_metadata_from_path(std::move(rel), t, std::move(metadata));
  }
  /// Saves and waits until committed (durable and visible); returns the save's timings. Like
  /// ckpt::save, it writes from the leaves' memory: their bytes must not change until it
  /// completes (`t` itself is taken by value, so a temporary tree is safe).
  boost::asio::awaitable<result<save_stats>> save_tree_and_metadata_from_path(
      std::filesystem::path rel_path, tree t, boost::json::object metadata) {
    auto target = save_target(rel_path);
    if (!target) co_return fail(std::move(target).error());
    auto op = ckpt::save(std::move(target.value().first), std::move(t), std::move(metadata),
                         std::move(target.value().second));
    co_return co_await std::move(op);
  }
  boost::asio::awaitable<result<save_stats>> save_tree_and_metadata(std::filesystem::path suffix,
                                                                    tree t,
                                                                    boost::json::object metadata) {
    auto rel = this->spec_.rel_path(suffix);
    if (!rel) co_return fail(std::move(rel).error());
    auto op = save_tree_and_metadata_from_path(rel.value(), std::move(t), std::move(metadata));
    co_return co_await std::move(op);
  }
  /// Blocking forms (do not call from the runtime's threads).
  result<save_stats> save_tree_and_metadata_from_path_blocking(std::filesystem::path rel_path,
                                                               const tree& t,
                                                               boost::json::object metadata) {
    CKPT_TRY(auto target, save_target(rel_path));
    return ckpt::save_blocking(std::move(target.first), t, std::move(metadata),
                               std::move(target.second));
  }
  result<save_stats> save_tree_and_metadata_blocking(std::filesystem::path suffix, const tree& t,
                                                     boost::json::object metadata) {
    CKPT_TRY(auto rel, this->spec_.rel_path(suffix));
    return save_tree_and_metadata_from_path_blocking(std::move(rel), t, std::move(metadata));
  }

  /// Sharded checkpoints of a multi-host job (ckpt/shard.hpp): every host calls these with the
  /// slices it holds, through the job's coordinator (a job without one acts as a job of one
  /// process). `start_save_sharded_tree_and_metadata_from_path` starts this host's part of
  /// saving `leaves` and `metadata` (host 0's metadata and job.json are the checkpoint's) as
  /// `checkpoints_dir / rel_path`; collective, in the same order on every host. Errors come
  /// through the handle, the same on every host.
  result<sharded_save_handle> start_save_sharded_tree_and_metadata_from_path(
      std::filesystem::path rel_path, std::vector<sharded_leaf> leaves,
      boost::json::object metadata) {
    CKPT_TRY(auto path, this->spec_.resolve(rel_path));
    sharded_save_options options;
    options.local = save_defaults_;
    CKPT_TRY(auto job, job_json());
    options.local.job = std::move(job);
    // Differential against LATEST as ordinary saves are; every host reads the same LATEST (the
    // previous save was registered collectively), and a rank with no usable part saves in full.
    if (differential_ && options.local.base.empty()) {
      if (auto base = detail::latest_checkpoint(this->spec_, options.local.runtime)) {
        options.local.base = std::move(*base);
        options.local.base_optional = true;
      }
    }
    auto coord = this->coord_ ? this->coord_ : make_local_coordinator();
    return ckpt::start_sharded_save(std::move(coord), std::move(path), std::move(leaves),
                                    std::move(metadata), std::move(options));
  }
  result<sharded_save_handle> start_save_sharded_tree_and_metadata(std::filesystem::path suffix,
                                                                   std::vector<sharded_leaf> leaves,
                                                                   boost::json::object metadata) {
    CKPT_TRY(auto rel, this->spec_.rel_path(suffix));
    return start_save_sharded_tree_and_metadata_from_path(std::move(rel), std::move(leaves),
                                                          std::move(metadata));
  }
  /// Saves and waits until committed (on every host).
  boost::asio::awaitable<result<sharded_save_stats>> save_sharded_tree_and_metadata(
      std::filesystem::path suffix, std::vector<sharded_leaf> leaves,
      boost::json::object metadata) {
    auto h = start_save_sharded_tree_and_metadata(std::move(suffix), std::move(leaves),
                                                  std::move(metadata));
    if (!h) co_return fail(std::move(h).error());
    auto c = co_await h.value().committed();
    if (!c) co_return fail(std::move(c).error());
    co_return h.value().stats();
  }
  result<sharded_save_stats> save_sharded_tree_and_metadata_blocking(
      std::filesystem::path suffix, std::vector<sharded_leaf> leaves,
      boost::json::object metadata) {
    CKPT_TRY(auto h, start_save_sharded_tree_and_metadata(std::move(suffix), std::move(leaves),
                                                          std::move(metadata)));
    CKPT_TRY(h.wait_committed());
    return h.stats();
  }

  /// Loads the slices `wanted` names from the sharded checkpoint `checkpoints_dir / rel_path`,
  /// whatever slicing and number of hosts saved it (load_sharded). Not collective. `partial`:
  /// skip wanted leaves the checkpoint lacks or holds with another dtype or global shape.
  boost::asio::awaitable<result<sharded_loaded>> get_sharded_tree_and_metadata_from_path(
      std::filesystem::path rel_path, std::vector<sharded_leaf> wanted,
      bool partial = false) const {
    auto path = this->spec_.resolve(rel_path);
    if (!path) co_return fail(std::move(path).error());
    auto options = load_defaults_;
    options.partial = partial;
    auto op = ckpt::load_sharded(path.value(), std::move(wanted), std::move(options));
    co_return co_await std::move(op);
  }
  boost::asio::awaitable<result<sharded_loaded>> get_sharded_tree_and_metadata(
      std::filesystem::path suffix, std::vector<sharded_leaf> wanted, bool partial = false) const {
    auto rel = this->spec_.rel_path(suffix);
    if (!rel) co_return fail(std::move(rel).error());
    auto op = get_sharded_tree_and_metadata_from_path(rel.value(), std::move(wanted), partial);
    co_return co_await std::move(op);
  }
  result<sharded_loaded> get_sharded_tree_and_metadata_blocking(std::filesystem::path suffix,
                                                                std::vector<sharded_leaf> wanted,
                                                                bool partial = false) const {
    CKPT_TRY(auto rel, this->spec_.rel_path(suffix));
    CKPT_TRY(auto path, this->spec_.resolve(rel));
    auto options = load_defaults_;
    options.partial = partial;
    return ckpt::load_sharded_blocking(std::move(path), std::move(wanted), std::move(options));
  }

 protected:
  /// The job.json of this job's saves: {"spec": spec, "config": value_from(config)}.
  result<boost::json::object> job_json() const {
    CKPT_TRY(auto cfg, detail::config_to_json(this->config_));
    return detail::make_job_json(this->spec_, std::move(cfg));
  }
  /// Where a save of `rel_path` goes and its options (the defaults, this job's job.json).
  result<std::pair<std::filesystem::path, ckpt::save_options>> save_target(
      const std::filesystem::path& rel_path) const {
    CKPT_TRY(auto path, this->spec_.resolve(rel_path));
    auto options = save_defaults_;
    CKPT_TRY(auto job, job_json());
    options.job = std::move(job);
    if (differential_ && options.base.empty()) {
      if (auto base = detail::latest_checkpoint(this->spec_, options.runtime)) {
        options.base = std::move(*base);
        options.base_optional = true;
      }
    }
    return std::pair{std::move(path), std::move(options)};
  }

  ckpt::save_options save_defaults_;
  ckpt::load_options load_defaults_;
  bool differential_ = true;
};

/// A job that can restore its state from a checkpoint and resume from its latest one.
///
/// The commit protocol of a training loop: save (await committed), then register_latest(suffix)
/// (atomic LATEST), then retention runs on a background thread. A crash at any point leaves
/// LATEST naming a committed checkpoint.
template <class C>
class restoreable_job : public checkpointed_job<C> {
 public:
  using checkpointed_job<C>::checkpointed_job;
  /// Waits for a retention pass still running in the background.
  ~restoreable_job() override { (void)wait_retention(); }

  /// Restores the job's state from the checkpoint `checkpoints_dir / rel_path` (any job's).
  /// Yours to implement, typically with get_tree_and_metadata_from_path.
  virtual boost::asio::awaitable<result<void>> restore_from_path(
      std::filesystem::path rel_path) = 0;

  /// Restores from this job's own checkpoint `suffix`.
  boost::asio::awaitable<result<void>> restore(std::filesystem::path suffix) {
    auto rel = this->spec_.rel_path(suffix);
    if (!rel) co_return fail(std::move(rel).error());
    auto op = restore_from_path(rel.value());
    co_return co_await std::move(op);
  }

  /// Registers this job's committed checkpoint `suffix` as its latest (store::write_latest:
  /// refuses an uncommitted or missing one; atomic, durable: a few fsyncs on the runtime's
  /// engine). Then, when retention is set, starts a retention pass on a background thread (after
  /// waiting for the previous one), so that deleting old checkpoints never delays the training
  /// loop or the next save.
  ///
  /// With a coordinator: collective; host 0 alone writes LATEST and runs retention, and every
  /// host returns once LATEST is durable (or with host 0's error).
  boost::asio::awaitable<result<void>> register_latest(std::filesystem::path suffix) {
    result<void> r = success();
    if (this->is_primary_host()) {
      auto dir = this->spec_.job_dir();
      if (dir) {
        auto op = store::async_write_latest(dir.value(), suffix, this->save_defaults().runtime);
        r = co_await std::move(op);
        if (r) start_retention(dir.value());
      } else {
        r = fail(std::move(dir).error());
      }
    }
    co_return this->agree_if_coordinated(std::move(r));
  }
  /// Blocking form of register_latest (on a private io_context in the calling thread).
  result<void> register_latest_blocking(std::filesystem::path suffix) {
    return detail::run_on_private_context(register_latest(std::move(suffix)));
  }

  /// The one call that checkpoints a training loop's state: saves `t` and `metadata` as this
  /// job's checkpoint `suffix`, waits for the commit, registers it as LATEST and starts
  /// retention (register_latest). To keep training while it is written instead: h =
  /// start_save_tree_and_metadata(suffix, t, metadata), co_await h.staged(), train on, then
  /// co_await commit_and_register(h, suffix). The leaves' bytes must not change until the await
  /// completes (the save writes from their memory); `t` itself is taken by value.
  boost::asio::awaitable<result<save_stats>> save_and_register(std::filesystem::path suffix, tree t,
                                                               boost::json::object metadata = {}) {
    auto op = this->save_tree_and_metadata(suffix, std::move(t), std::move(metadata));
    auto s = co_await std::move(op);
    if (!s) co_return fail(std::move(s).error());
    auto registration = register_latest(std::move(suffix));
    auto r = co_await std::move(registration);
    if (!r) co_return fail(std::move(r).error());
    co_return std::move(s).value();
  }
  /// Awaits `h`'s commit, then register_latest(suffix); the save's stats.
  boost::asio::awaitable<result<save_stats>> commit_and_register(save_handle h,
                                                                 std::filesystem::path suffix) {
    auto c = co_await h.committed();
    if (!c) co_return fail(std::move(c).error());
    auto registration = register_latest(std::move(suffix));
    auto r = co_await std::move(registration);
    if (!r) co_return fail(std::move(r).error());
    co_return h.stats();
  }
  /// Blocking form of save_and_register.
  result<save_stats> save_and_register_blocking(std::filesystem::path suffix, const tree& t,
                                                boost::json::object metadata = {}) {
    return detail::run_on_private_context(
        save_and_register(std::move(suffix), t, std::move(metadata)));
  }

  /// Sets the retention applied after each register_latest (default: keep everything).
  void set_retention(store::retention_options options) noexcept { retention_ = options; }
  const store::retention_options& retention() const noexcept { return retention_; }
  /// Waits for the background retention pass started by the last register_latest and returns
  /// its report (an empty report when none ran or it was already collected). An earlier pass's
  /// error that nobody collected (a register_latest started the next pass first) is returned
  /// here first, once.
  result<store::retention_report> wait_retention() {
    if (retention_task_.valid()) {
      auto r = retention_task_.get();
      if (!r && !retention_error_) retention_error_ = r.error();
      if (r && !retention_error_) return r;
    }
    if (retention_error_) {
      error e = std::move(*retention_error_);
      retention_error_.reset();
      return fail(std::move(e));
    }
    return store::retention_report{};
  }

  /// The suffix LATEST names for `spec`'s job, or none when it has no LATEST. A LATEST naming a
  /// missing or uncommitted checkpoint is an error (see store::read_latest). The reads run on
  /// `rt`'s engine (null: runtime::global()).
  static boost::asio::awaitable<result<std::optional<std::string>>> latest(
      execution_spec spec, std::shared_ptr<ckpt::runtime> rt = {}) {
    auto dir = spec.job_dir();
    if (!dir) co_return fail(std::move(dir).error());
    auto op = store::async_read_latest(dir.value(), std::move(rt));
    co_return co_await std::move(op);
  }
  /// Blocking form of latest.
  static result<std::optional<std::string>> latest_blocking(
      const execution_spec& spec, const std::shared_ptr<ckpt::runtime>& rt = {}) {
    CKPT_TRY(auto dir, spec.job_dir());
    return store::read_latest(dir, rt);
  }

  /// The committed checkpoints of `spec`'s job in natural order (`step_9` before `step_10`);
  /// temporary, trash and uncommitted directories are never listed. Runs as latest().
  static boost::asio::awaitable<result<std::vector<std::string>>> checkpoints(
      execution_spec spec, std::shared_ptr<ckpt::runtime> rt = {}) {
    auto dir = spec.job_dir();
    if (!dir) co_return fail(std::move(dir).error());
    auto op = store::async_list_committed(dir.value(), std::move(rt));
    co_return co_await std::move(op);
  }
  /// Blocking form of checkpoints.
  static result<std::vector<std::string>> checkpoints_blocking(
      const execution_spec& spec, const std::shared_ptr<ckpt::runtime>& rt = {}) {
    CKPT_TRY(auto dir, spec.job_dir());
    return store::list_committed(dir, rt);
  }

  /// Creates a `Job` from the checkpoint at `checkpoints_dir / rel_path` and restores it.
  ///
  /// The config is the checkpoint's job.json config with `runtime_cfg` overlaid as a JSON merge
  /// patch (RFC 7386; null: no overlay; a null member deletes the key), then, where C is
  /// default-constructible, every field it lacks taken from C{} (a field added since the save,
  /// or one the overlay deleted; detail::fill_config_defaults), converted with value_to<C>. A
  /// key C does not have is an error naming it. With `resume` the job gets
  /// the saved identity: project, group, job_name and run_id (to rejoin logging sessions);
  /// the cluster part (checkpoints_dir, host index/count) always stays the caller's, since it
  /// describes where this process runs, not who the job is. Without `resume` the job keeps
  /// `spec` as passed (e.g. fine-tuning from another job's weights).
  ///
  /// `Job` must derive from restoreable_job<C> and be constructible from (execution_spec, C).
  /// The job is built with `Job(spec, config)`, then `restore_from_path(rel_path)` is awaited.
  /// @return the restored job and its config.
  template <class Job>
  static boost::asio::awaitable<result<std::pair<std::unique_ptr<Job>, C>>> from_checkpoint_path(
      std::filesystem::path rel_path, execution_spec spec, boost::json::value runtime_cfg = nullptr,
      bool resume = false) {
    static_assert(std::is_base_of_v<restoreable_job<C>, Job>,
                  "Job must derive from restoreable_job<C>");
    auto path = spec.resolve(rel_path);
    if (!path) co_return fail(std::move(path).error());
    auto id = detail::read_checkpoint_identity(path.value(), spec, runtime_cfg, resume);
    if (!id) co_return fail(std::move(id).error());
    auto evolved = detail::config_with_defaults<C>(std::move(id.value().config));
    if (!evolved) {
      co_return fail(
          detail::with_path_context(std::move(evolved).error(), "restore job", path.value()));
    }
    auto config = detail::config_from_json<C>(evolved.value());
    if (!config) {
      co_return fail(
          detail::with_path_context(std::move(config).error(), "restore job", path.value()));
    }
    auto job = std::make_unique<Job>(std::move(id.value().spec), config.value());
    auto op = job->restore_from_path(rel_path);
    auto restored = co_await std::move(op);
    if (!restored) {
      co_return fail(
          detail::with_path_context(std::move(restored).error(), "restore job", path.value()));
    }
    co_return std::pair<std::unique_ptr<Job>, C>(std::move(job), std::move(config).value());
  }
  /// The same for `spec`'s own checkpoint `suffix`.
  template <class Job>
  static boost::asio::awaitable<result<std::pair<std::unique_ptr<Job>, C>>> from_checkpoint(
      std::filesystem::path suffix, execution_spec spec, boost::json::value runtime_cfg = nullptr,
      bool resume = false) {
    auto rel = spec.rel_path(suffix);
    if (!rel) co_return fail(std::move(rel).error());
    auto op =
        from_checkpoint_path<Job>(rel.value(), std::move(spec), std::move(runtime_cfg), resume);
    co_return co_await std::move(op);
  }
  /// Blocking forms (run on a private io_context in the calling thread).
  template <class Job>
  static result<std::pair<std::unique_ptr<Job>, C>> from_checkpoint_path_blocking(
      std::filesystem::path rel_path, execution_spec spec, boost::json::value runtime_cfg = nullptr,
      bool resume = false) {
    return detail::run_on_private_context(from_checkpoint_path<Job>(
        std::move(rel_path), std::move(spec), std::move(runtime_cfg), resume));
  }
  template <class Job>
  static result<std::pair<std::unique_ptr<Job>, C>> from_checkpoint_blocking(
      std::filesystem::path suffix, execution_spec spec, boost::json::value runtime_cfg = nullptr,
      bool resume = false) {
    return detail::run_on_private_context(
        from_checkpoint<Job>(std::move(suffix), std::move(spec), std::move(runtime_cfg), resume));
  }

 private:
  /// Starts a retention pass over `dir` on a background thread when retention is set (after
  /// collecting the previous pass: its error is kept for wait_retention()).
  void start_retention(const std::filesystem::path& dir) {
    if (retention_.keep_last == 0 && retention_.keep_every == 0) return;
    if (retention_task_.valid()) {
      auto previous = retention_task_.get();
      if (!previous && !retention_error_) retention_error_ = previous.error();
    }
    retention_task_ = std::async(std::launch::async,
                                 [dir, opts = retention_, rt = this->save_defaults().runtime] {
                                   return store::apply_retention(dir, opts, rt);
                                 });
  }

  store::retention_options retention_;
  std::future<result<store::retention_report>> retention_task_;
  std::optional<error> retention_error_;  // of a pass nobody collected
};

/// restoreable_job<C>::from_checkpoint<Job> without naming the job type twice:
/// `auto r = co_await ckpt::job_from_checkpoint<MyJob>("step_100", spec);`.
template <class Job>
auto job_from_checkpoint(std::filesystem::path suffix, execution_spec spec,
                         boost::json::value runtime_cfg = nullptr, bool resume = false) {
  return Job::template from_checkpoint<Job>(std::move(suffix), std::move(spec),
                                            std::move(runtime_cfg), resume);
}
/// Blocking form of job_from_checkpoint.
template <class Job>
auto job_from_checkpoint_blocking(std::filesystem::path suffix, execution_spec spec,
                                  boost::json::value runtime_cfg = nullptr, bool resume = false) {
  return Job::template from_checkpoint_blocking<Job>(std::move(suffix), std::move(spec),
                                                     std::move(runtime_cfg), resume);
}

/// Seed spellings.
template <class C>
using BasicJob = basic_job<C>;
template <class C>
using CheckpointedJob = checkpointed_job<C>;
template <class C>
using RestoreableJob = restoreable_job<C>;

}  // namespace ckpt
