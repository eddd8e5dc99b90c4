#include <ckpt/job.hpp>
#include <ckpt/load.hpp>
#include <ckpt/store.hpp>

#include <boost/json/serialize.hpp>

#include <limits>

namespace ckpt {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

result<void> check_part(std::string_view field, const std::string& value) {
  const std::string quoted = "execution spec " + std::string(field) + " \"" + value + "\"";
  if (value.empty()) return fail(errc::invalid_argument, quoted + " is empty");
  if (value == "." || value == "..") {
    return fail(errc::invalid_argument, quoted + " is not a directory name");
  }
  if (value[0] == '.') return fail(errc::invalid_argument, quoted + " starts with '.'");
  if (value.find('/') != std::string::npos || value.find('\0') != std::string::npos) {
    return fail(errc::invalid_argument, quoted + " holds '/' or NUL");
  }
  return success();
}

result<std::string> string_field(const json::object& o, std::string_view key, bool required) {
  const json::value* v = o.if_contains(key);
  if (!v) {
    if (required) return fail(errc::invalid_argument, "missing field \"" + std::string(key) + "\"");
    return std::string();
  }
  if (!v->is_string()) {
    return fail(errc::invalid_argument, "field \"" + std::string(key) + "\" is not a string");
  }
  return std::string(v->get_string());
}

result<std::uint32_t> u32_field(const json::object& o, std::string_view key,
                                std::uint32_t fallback) {
  const json::value* v = o.if_contains(key);
  if (!v) return fallback;
  std::int64_t n = -1;
  if (v->is_int64()) n = v->get_int64();
  if (v->is_uint64() && v->get_uint64() <= std::numeric_limits<std::uint32_t>::max()) {
    n = static_cast<std::int64_t>(v->get_uint64());
  }
  if (n < 0 || n > std::numeric_limits<std::uint32_t>::max()) {
    return fail(errc::invalid_argument,
                "field \"" + std::string(key) + "\" is not an unsigned 32-bit integer");
  }
  return static_cast<std::uint32_t>(n);
}

}  // namespace

result<fs::path> execution_spec::job_rel_path() const {
  CKPT_TRY(check_part("project", project));
  CKPT_TRY(check_part("group", group));
  CKPT_TRY(check_part("job_name", job_name));
  return fs::path(project) / group / job_name;
}

result<fs::path> execution_spec::job_dir() const {
  CKPT_TRY(auto rel, job_rel_path());
  return store::resolve(cluster.checkpoints_dir, rel, "job path");
}

result<fs::path> execution_spec::rel_path(const fs::path& suffix) const {
  CKPT_TRY(store::check_relative(suffix, "checkpoint suffix"));
  CKPT_TRY(auto rel, job_rel_path());
  return rel / suffix;
}

result<fs::path> execution_spec::resolve(const fs::path& rel) const {
  return store::resolve(cluster.checkpoints_dir, rel, "checkpoint path");
}

void tag_invoke(json::value_from_tag, json::value& out, const execution_spec& s) {
  out = json::object{
      {"project", s.project},
      {"group", s.group},
      {"job_name", s.job_name},
      {"run_id", s.run_id},
      {"cluster", json::object{{"checkpoints_dir", s.cluster.checkpoints_dir.string()},
                               {"host_index", s.cluster.host_index},
                               {"host_count", s.cluster.host_count}}},
  };
}

result<execution_spec> spec_from_json(const json::value& v) {
  const std::string context = "execution spec from JSON";
  if (!v.is_object()) return fail(errc::invalid_argument, context + ": not an object");
  const auto& o = v.get_object();
  execution_spec s;
  CKPT_TRY_CTX(s.project, string_field(o, "project", true), context);
  CKPT_TRY_CTX(s.group, string_field(o, "group", true), context);
  CKPT_TRY_CTX(s.job_name, string_field(o, "job_name", true), context);
  CKPT_TRY_CTX(s.run_id, string_field(o, "run_id", false), context);
  if (const json::value* c = o.if_contains("cluster")) {
    if (!c->is_object())
      return fail(errc::invalid_argument, context + ": cluster is not an object");
    const auto& co = c->get_object();
    CKPT_TRY_CTX(auto dir, string_field(co, "checkpoints_dir", false), context + ": cluster");
    s.cluster.checkpoints_dir = dir;
    CKPT_TRY_CTX(s.cluster.host_index, u32_field(co, "host_index", 0), context + ": cluster");
    CKPT_TRY_CTX(s.cluster.host_count, u32_field(co, "host_count", 1), context + ": cluster");
  }
  return s;
}

execution_spec tag_invoke(json::value_to_tag<execution_spec>, const json::value& v) {
  return spec_from_json(v).value();  // throws std::system_error with the message
}

json::value json_merge_patch(json::value target, const json::value& patch) {
  if (!patch.is_object()) return patch;
  if (!target.is_object()) target = json::object();
  auto& t = target.get_object();
  for (const auto& [key, value] : patch.get_object()) {
    if (value.is_null()) {
      t.erase(key);
    } else if (auto* existing = t.if_contains(key)) {
      *existing = json_merge_patch(std::move(*existing), value);
    } else {
      t[key] = json_merge_patch(nullptr, value);
    }
  }
  return target;
}

namespace detail {

namespace {
void fill(json::value& v, const json::value& defaults, const std::string& at,
          std::vector<std::string>& unknown) {
  if (!defaults.is_object() || defaults.get_object().empty() || !v.is_object()) return;
  auto& o = v.get_object();
  const auto& d = defaults.get_object();
  for (const auto& [key, value] : o) {
    if (!d.contains(key)) unknown.push_back(at + std::string(key));
  }
  for (const auto& [key, value] : d) {
    if (auto* have = o.if_contains(key)) {
      fill(*have, value, at + std::string(key) + ".", unknown);
    } else {
      o[key] = value;
    }
  }
}
}  // namespace

result<void> fill_config_defaults(json::value& config, const json::value& defaults) {
  if (config.is_null()) config = json::object();
  std::vector<std::string> unknown;
  fill(config, defaults, "", unknown);
  if (unknown.empty()) return success();
  std::string names;
  for (const auto& u : unknown)
    names += (names.empty() ? "\"" : ", \"") + u + "\"";
  std::string known;
  for (const auto& [key, value] : defaults.get_object())
    known += (known.empty() ? "" : ", ") + std::string(key);
  return fail(errc::invalid_argument, "config: unknown field" +
                                          std::string(unknown.size() == 1 ? " " : "s ") + names +
                                          " (the config type has: " + known + ")");
}

std::optional<std::filesystem::path> latest_checkpoint(const execution_spec& spec,
                                                       const std::shared_ptr<runtime>& rt) {
  auto dir = spec.job_dir();
  if (!dir) return std::nullopt;
  auto latest = store::read_latest(dir.value(), rt);  // (the one reader of LATEST)
  if (!latest || !latest.value()) return std::nullopt;
  return dir.value() / *latest.value();
}

json::object make_job_json(const execution_spec& spec, json::value config) {
  return json::object{{"spec", json::value_from(spec)}, {"config", std::move(config)}};
}

result<checkpoint_identity> read_checkpoint_identity(const fs::path& ckpt_dir,
                                                     const execution_spec& caller,
                                                     const json::value& runtime_cfg, bool resume) {
  const std::string context = "job.json of " + ckpt_dir.string();
  CKPT_TRY_CTX(auto job, ckpt::load_job_blocking(ckpt_dir), "read " + context);
  checkpoint_identity id;
  const json::value* config = job.if_contains("config");
  if (!config) return fail(errc::corrupt, context + " has no \"config\"");
  id.config = runtime_cfg.is_null() ? *config : json_merge_patch(*config, runtime_cfg);
  id.spec = caller;
  if (resume) {
    const json::value* saved = job.if_contains("spec");
    if (!saved) return fail(errc::corrupt, context + " has no \"spec\"");
    CKPT_TRY_CTX(auto s, spec_from_json(*saved), context);
    id.spec.project = std::move(s.project);
    id.spec.group = std::move(s.group);
    id.spec.job_name = std::move(s.job_name);
    id.spec.run_id = std::move(s.run_id);
  }
  return id;
}

}  // namespace detail

}  // namespace ckpt
