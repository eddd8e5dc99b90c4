// Coordinators without MPI: one process alone, or a group of in-memory ranks (one thread each);
// and `agree`, which turns every rank's outcome into one verdict.
#include "shard/outcome_wire.hpp"

#include "format/index.hpp"

#include <ckpt/coordinator.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <system_error>

namespace ckpt {

std::string coordinator::describe() const {
  return "rank " + std::to_string(rank()) + " of " + std::to_string(size());
}

std::uint64_t coordinator::collective_turn::take() {
  std::lock_guard l(m_);
  return next_++;
}

void coordinator::collective_turn::wait(std::uint64_t ticket) {
  std::unique_lock l(m_);
  cv_.wait(l, [&] { return serving_ == ticket; });
}

void coordinator::collective_turn::done(std::uint64_t ticket) {
  std::lock_guard l(m_);
  if (serving_ == ticket) ++serving_;
  cv_.notify_all();
}

namespace {

// The state the ranks of an in-memory group share: one all-gather round at a time. A round
// collects every rank's bytes, then every rank copies the result out; the next round starts
// only after the last rank left the previous one.
struct group_state {
  explicit group_state(int n) : size(n), slots(static_cast<std::size_t>(n)) {}
  const int size;
  std::mutex m;
  std::condition_variable cv;
  std::uint64_t generation = 0;
  int arrived = 0;
  bool draining = false;
  int left = 0;
  std::vector<std::string> slots;
  std::vector<std::string> round;

  std::vector<std::string> all_gather(int rank, std::string bytes) {
    std::unique_lock l(m);
    cv.wait(l, [&] { return !draining; });
    slots[static_cast<std::size_t>(rank)] = std::move(bytes);
    const std::uint64_t mine = generation;
    if (++arrived == size) {
      round = std::move(slots);
      slots.assign(static_cast<std::size_t>(size), {});
      arrived = 0;
      draining = true;
      left = size;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(l, [&] { return generation != mine; });
    }
    std::vector<std::string> out = round;
    if (--left == 0) {
      draining = false;
      round.clear();
      cv.notify_all();
    }
    return out;
  }
};

class local_coordinator final : public coordinator {
 public:
  local_coordinator(std::shared_ptr<group_state> g, int rank) : group_(std::move(g)), rank_(rank) {}
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return group_->size; }
  std::string describe() const override {
    return "local rank " + std::to_string(rank_) + " of " + std::to_string(group_->size);
  }
  result<void> barrier() override {
    if (group_->size > 1) (void)group_->all_gather(rank_, {});
    return success();
  }
  result<std::string> broadcast(std::string bytes, int root) override {
    CKPT_TRY(check_root(root));
    if (group_->size == 1) return bytes;
    auto all = group_->all_gather(rank_, rank_ == root ? std::move(bytes) : std::string());
    return std::move(all[static_cast<std::size_t>(root)]);
  }
  result<std::vector<std::string>> gather(std::string bytes, int root) override {
    CKPT_TRY(check_root(root));
    if (group_->size == 1) return std::vector<std::string>{std::move(bytes)};
    auto all = group_->all_gather(rank_, std::move(bytes));
    if (rank_ != root) all.clear();
    return all;
  }

 private:
  result<void> check_root(int root) const {
    if (root < 0 || root >= group_->size) {
      return fail(errc::invalid_argument,
                  "collective root " + std::to_string(root) + " is not a rank of " + describe());
    }
    return success();
  }
  std::shared_ptr<group_state> group_;
  int rank_;
};

}  // namespace

std::shared_ptr<coordinator> make_local_coordinator() {
  return std::make_shared<local_coordinator>(std::make_shared<group_state>(1), 0);
}

std::vector<std::shared_ptr<coordinator>> make_local_group(int n) {
  if (n < 1) n = 1;
  auto g = std::make_shared<group_state>(n);
  std::vector<std::shared_ptr<coordinator>> out;
  for (int r = 0; r < n; ++r)
    out.push_back(std::make_shared<local_coordinator>(g, r));
  return out;
}

namespace detail {

boost::json::object error_to_json(const error& e) {
  // A message may quote untrusted bytes (a leaf path); the wire is JSON, so it must be UTF-8.
  std::string message = e.message();
  if (!format::is_valid_utf8(message)) {
    for (char& c : message)
      if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  }
  return boost::json::object{{"category", e.code().category().name()},
                             {"value", e.code().value()},
                             {"message", std::move(message)}};
}

error error_from_json(const boost::json::value& v, std::string_view prefix) {
  const auto* o = v.if_object();
  const auto* cat = o ? o->if_contains("category") : nullptr;
  const auto* val = o ? o->if_contains("value") : nullptr;
  const auto* msg = o ? o->if_contains("message") : nullptr;
  if (!cat || !cat->is_string() || !val || !val->is_int64() || !msg || !msg->is_string()) {
    return error(errc::collective_failed, std::string(prefix) + "an error that does not parse");
  }
  const std::string_view c = cat->as_string();
  const int value = static_cast<int>(val->as_int64());
  std::string message = std::string(prefix) + std::string(msg->as_string());
  std::error_code code;
  if (c == error_category().name()) {
    code = make_error_code(static_cast<errc>(value));
  } else if (c == std::system_category().name()) {
    code = std::error_code(value, std::system_category());
  } else if (c == std::generic_category().name()) {
    code = std::error_code(value, std::generic_category());
  } else {
    code = make_error_code(errc::aborted);
    message += " (" + std::string(c) + " error " + std::to_string(value) + ")";
  }
  return error(code, std::move(message));
}

}  // namespace detail

result<void> agree(coordinator& c, const result<void>& local) {
  const std::string mine =
      local ? std::string("ok") : boost::json::serialize(detail::error_to_json(local.error()));
  CKPT_TRY(auto all, c.gather(mine, 0));
  std::string verdict = "ok";
  if (c.rank() == 0) {
    int failed = 0;
    for (std::size_t r = 0; r < all.size(); ++r) {
      if (all[r] == "ok") continue;
      if (failed++ > 0) continue;
      boost::json::error_code ec;
      auto v = boost::json::parse(all[r], ec);
      auto e = detail::error_from_json(ec ? boost::json::value() : v,
                                       "rank " + std::to_string(r) + ": ");
      verdict = boost::json::serialize(detail::error_to_json(e));
    }
    if (failed > 1) {
      boost::json::error_code ec;
      auto v = boost::json::parse(verdict, ec);
      auto e = detail::error_from_json(v, "");
      e = error(e.code(), e.message() + " (and " + std::to_string(failed - 1) +
                              " more failing rank" + (failed > 2 ? "s" : "") + ")");
      verdict = boost::json::serialize(detail::error_to_json(e));
    }
  }
  CKPT_TRY(auto shared, c.broadcast(std::move(verdict), 0));
  if (shared == "ok") return success();
  boost::json::error_code ec;
  auto v = boost::json::parse(shared, ec);
  return fail(detail::error_from_json(ec ? boost::json::value() : v, ""));
}

}  // namespace ckpt
