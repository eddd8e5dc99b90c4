#include "pipeline/write_tracker.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace ckpt::detail {

namespace {

// Linux 6.7 names that Debian 12's kernel headers (6.1) do not have yet (include/uapi/linux/
// userfaultfd.h and fs.h).
constexpr std::uint64_t feature_wp_async = 1u << 15;  // UFFD_FEATURE_WP_ASYNC
#ifndef UFFD_USER_MODE_ONLY
constexpr int user_mode_only = 1;
#else
constexpr int user_mode_only = UFFD_USER_MODE_ONLY;
#endif

struct page_region {
  std::uint64_t start, end, categories;
};
struct pm_scan_arg {
  std::uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted,
      category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long pagemap_scan = _IOWR('f', 16, pm_scan_arg);  // PAGEMAP_SCAN
constexpr std::uint64_t page_is_written = 1u << 1;                   // PAGE_IS_WRITTEN
constexpr std::uint64_t scan_wp_matching = 1u << 0;                  // PM_SCAN_WP_MATCHING
constexpr std::uint64_t scan_check_wpasync = 1u << 1;                // PM_SCAN_CHECK_WPASYNC

std::uintptr_t page_size() {
  static const auto n = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  return n;
}

}  // namespace

std::unique_ptr<write_tracker> write_tracker::create() {
  const int uffd =
      static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | user_mode_only));
  if (uffd < 0) return nullptr;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = feature_wp_async;
  const int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (::ioctl(uffd, UFFDIO_API, &api) != 0 || pagemap < 0) {
    ::close(uffd);
    if (pagemap >= 0) ::close(pagemap);
    return nullptr;
  }
  // PAGEMAP_SCAN itself (an empty range answers 0 where the kernel has it).
  pm_scan_arg probe{};
  probe.size = sizeof probe;
  if (::ioctl(pagemap, pagemap_scan, &probe) < 0) {
    ::close(uffd);
    ::close(pagemap);
    return nullptr;
  }
  return std::unique_ptr<write_tracker>(new write_tracker(uffd, pagemap));
}

write_tracker::~write_tracker() {
  ::close(uffd_);  // (unregisters every range)
  ::close(pagemap_);
}

void write_tracker::forget(std::uintptr_t start, std::uintptr_t end) {
  auto it = hashes_.lower_bound({start > longest_ ? start - longest_ : 0, 0});
  while (it != hashes_.end() && it->first.first < end) {
    if (it->first.first + it->first.second > start) {
      it = hashes_.erase(it);
    } else {
      ++it;
    }
  }
}

bool write_tracker::look(std::span<const std::byte> bytes) {
  if (bytes.empty()) return false;
  const std::uintptr_t ps = page_size();
  const auto first = reinterpret_cast<std::uintptr_t>(bytes.data()) / ps * ps;
  const auto last =
      (reinterpret_cast<std::uintptr_t>(bytes.data()) + bytes.size() + ps - 1) / ps * ps;
  std::vector<page_region> regions(1024);
  std::lock_guard l(m_);
  ++epoch_;
  for (std::uintptr_t at = first; at < last;) {
    pm_scan_arg a{};
    a.size = sizeof a;
    a.flags = scan_wp_matching | scan_check_wpasync;
    a.start = at;
    a.end = last;
    a.vec = reinterpret_cast<std::uintptr_t>(regions.data());
    a.vec_len = regions.size();
    a.category_mask = page_is_written;
    a.return_mask = page_is_written;
    const long n = ::ioctl(pagemap_, pagemap_scan, &a);
    if (n < 0) {
      const int err = errno;
      // Whatever failed, the written state of some pages may be gone: nothing here is known.
      forget(first, last);
      if (err != EPERM) return false;
      // Not registered (the first look, or a mapping replaced since): register and protect;
      // every page counts as written.
      uffdio_register reg{};
      reg.range = {first, last - first};
      reg.mode = UFFDIO_REGISTER_MODE_WP;
      if (::ioctl(uffd_, UFFDIO_REGISTER, &reg) != 0) return false;
      uffdio_writeprotect wp{};
      wp.range = {first, last - first};
      wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
      return ::ioctl(uffd_, UFFDIO_WRITEPROTECT, &wp) == 0;
    }
    for (long i = 0; i < n; ++i)
      forget(regions[static_cast<std::size_t>(i)].start, regions[static_cast<std::size_t>(i)].end);
    if (a.walk_end <= at) {  // (no progress: never trust what follows)
      forget(first, last);
      return false;
    }
    at = a.walk_end;
  }
  return true;
}

std::optional<format::raw_hash> write_tracker::known(const std::byte* p, std::uint64_t n) const {
  std::lock_guard l(m_);
  auto it = hashes_.find({reinterpret_cast<std::uintptr_t>(p), n});
  if (it == hashes_.end()) return std::nullopt;
  return it->second;
}

std::uint64_t write_tracker::epoch() const {
  std::lock_guard l(m_);
  return epoch_;
}

void write_tracker::remember(const std::byte* p, std::uint64_t n, format::raw_hash h,
                             std::uint64_t epoch) {
  std::lock_guard l(m_);
  if (epoch != epoch_) return;
  hashes_[{reinterpret_cast<std::uintptr_t>(p), n}] = h;
  longest_ = std::max(longest_, n);
}

}  // namespace ckpt::detail
