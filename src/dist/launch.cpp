// Launcher detection and the rendezvous that hands rank 0's bytes to every rank (see launch.h).
#include "dist/launch.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "common/error.h"

namespace sgpt::dist {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kMagic = 0x53475054;  // "SGPT", first word of every message and of the file
constexpr size_t kHelloSize = 12;        // magic, world, rank
constexpr size_t kHeaderSize = 12;       // magic, payload size (TCP reply)
constexpr size_t kFileHeaderSize = 16;   // magic, world, payload size
// A reply or file announcing more than this is corrupt (the NCCL unique id is 128 bytes); the
// check keeps a garbage size from turning into a huge allocation.
constexpr uint64_t kMaxPayload = uint64_t(1) << 30;
constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr auto kConnectAttempt = std::chrono::seconds(2);  // per try: a silent host is retried
constexpr auto kStaleMargin = std::chrono::seconds(120);

// "Their own start" of the file rendezvous: the process start. A namespace-scope constant is
// initialised before main() runs, so it is the start to within the static initialisers, far inside
// the 120 s margin, and needs neither /proc nor a hook in main(). A file modified before
// kProcessStart - 120 s cannot have been written by this run's rank 0.
const std::chrono::system_clock::time_point kProcessStart = std::chrono::system_clock::now();

// ---- launcher detection ----

struct Launcher {
  const char* name;
  const char* rank_var;
  const char* size_var;
  const char* local_var;
  bool local_optional;  // MPICH and torchrun may leave the local rank out; then it is 0
};

constexpr std::array<Launcher, 4> kLaunchers = {{
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", false},
    {"mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", true},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", false},
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", true},
}};

// Whole string of decimal digits that fits an int; no sign, no spaces.
std::optional<int> parse_count(const char* s) {
  if (*s == '\0') return std::nullopt;
  long long v = 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return std::nullopt;
    v = v * 10 + (*s - '0');
    if (v > INT_MAX) return std::nullopt;
  }
  return static_cast<int>(v);
}

int read_count(const GetEnv& get, const char* var) {
  const char* s = get(var);
  const std::optional<int> v = parse_count(s);
  if (!v)
    throw UserError(std::string(var) + "='" + s + "' is not a non-negative integer (launcher variable)");
  return *v;
}

LaunchInfo read_launcher(const GetEnv& get, const Launcher& l) {
  LaunchInfo info;
  info.launcher = l.name;
  info.rank = read_count(get, l.rank_var);
  info.world = read_count(get, l.size_var);
  if (info.world < 1)
    throw UserError(std::string(l.size_var) + "=" + std::to_string(info.world) +
                    ": the world size must be at least 1");
  if (info.rank >= info.world)
    throw UserError(std::string(l.rank_var) + "=" + std::to_string(info.rank) + " is not below " +
                    l.size_var + "=" + std::to_string(info.world));
  if (get(l.local_var)) {
    info.local_rank = read_count(get, l.local_var);
  } else if (!l.local_optional) {
    // This launcher always sets it; without it there is no safe choice of GPU.
    throw UserError(std::string(l.rank_var) + " and " + l.size_var + " are set but " + l.local_var +
                    " is not (" + l.name + " launch without a local rank)");
  }
  if (info.local_rank >= info.world)
    throw UserError(std::string(l.local_var) + "=" + std::to_string(info.local_rank) +
                    " is not below " + l.size_var + "=" + std::to_string(info.world));
  return info;
}

GetEnv or_std_getenv(const GetEnv& getenv) {
  if (getenv) return getenv;
  return [](const char* name) -> const char* { return std::getenv(name); };
}

// ---- rendezvous addresses ----

struct Endpoint {
  bool tcp = false;
  std::string host;  // tcp
  int port = 0;      // tcp
  std::string path;  // file
};

bool valid_host(const std::string& h) {
  if (h.empty()) return false;
  for (const char c : h) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Records why a parse or read gave nothing; for one-line early returns.
std::nullopt_t none(std::string& why, std::string text) {
  why = std::move(text);
  return std::nullopt;
}

// The endpoint, or the reason `s` is not one in `why`.
std::optional<Endpoint> parse_endpoint(const std::string& s, std::string& why) {
  Endpoint ep;
  if (s.rfind("tcp://", 0) == 0) {
    const std::string rest = s.substr(6);
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos) return none(why, "no :PORT after the host");
    ep.host = rest.substr(0, colon);
    if (!valid_host(ep.host)) return none(why, "the host must be a name or an IPv4 address");
    const std::optional<int> port = parse_count(rest.substr(colon + 1).c_str());
    if (!port || *port < 1 || *port > 65535) return none(why, "the port must be in 1..65535");
    ep.tcp = true;
    ep.port = *port;
    return ep;
  }
  if (s.rfind("file://", 0) == 0) {
    ep.path = s.substr(7);
    if (ep.path.empty() || ep.path[0] != '/')
      return none(why, "the path must be absolute (file:///dir/name)");
    if (ep.path.back() == '/') return none(why, "the path must name a file, not a folder");
    return ep;
  }
  why = "expected tcp://HOST:PORT or file:///absolute/path";
  return std::nullopt;
}

Endpoint endpoint_or_throw(const std::string& s, const std::string& origin) {
  std::string why;
  const std::optional<Endpoint> ep = parse_endpoint(s, why);
  if (!ep) throw UserError("dist.init = '" + s + "'" + origin + " is not a rendezvous address: " + why);
  return *ep;
}

// ---- time ----

std::string seconds_text(double s) {
  std::ostringstream o;
  o << s << " s";
  return o.str();
}

// Milliseconds to the deadline for poll(), rounded up so a wait never ends just short of it.
int ms_left(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

std::string errno_text(int e) { return std::strerror(e); }

// ---- sockets ----

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}
void put_u64(uint8_t* p, uint64_t v) {
  put_u32(p, uint32_t(v >> 32));
  put_u32(p + 4, uint32_t(v));
}
uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) << 32 | get_u32(p + 4); }

// Waits for `events` on a socket: 0 when ready, ETIMEDOUT at the deadline, else an errno.
int wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, ms_left(deadline));
    if (n > 0) return 0;  // errors and hang-ups surface in the following send/recv
    if (n == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

constexpr int kClosed = -1;  // the peer closed the connection (recv_all)

// All sockets are non-blocking; these loop over partial transfers, EINTR and EAGAIN until the
// deadline. They return 0, ETIMEDOUT, kClosed or an errno.
int send_all(int fd, const uint8_t* p, size_t n, Clock::time_point deadline) {
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= size_t(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    if (const int e = wait_fd(fd, POLLOUT, deadline)) return e;
  }
  return 0;
}

int recv_all(int fd, uint8_t* p, size_t n, Clock::time_point deadline) {
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= size_t(k);
      continue;
    }
    if (k == 0) return kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    if (const int e = wait_fd(fd, POLLIN, deadline)) return e;
  }
  return 0;
}

std::string io_text(int e) { return e == kClosed ? "the connection was closed" : errno_text(e); }

// ---- TCP, rank 0 ----

struct Pending {  // an accepted connection whose hello is not complete yet
  Fd fd;
  std::array<uint8_t, kHelloSize> buf{};
  size_t got = 0;
};

Fd listen_on(int port, const std::string& addr) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (s.get() < 0) throw UserError("rank 0 cannot create a socket for " + addr + ": " + errno_text(errno));
  const int one = 1;
  // A previous run's connections in TIME_WAIT must not block the port.
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(uint16_t(port));
  if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
    throw UserError("rank 0 cannot listen on port " + std::to_string(port) + " for " + addr + ": " +
                    errno_text(errno));
  if (::listen(s.get(), SOMAXCONN) != 0)
    throw UserError("rank 0 cannot listen on port " + std::to_string(port) + " for " + addr + ": " +
                    errno_text(errno));
  return s;
}

void accept_waiting(const Fd& lis, std::vector<Pending>& pending) {
  for (;;) {
    const int c = ::accept4(lis.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) {
      pending.push_back(Pending{Fd(c)});
    } else if (errno != EINTR) {
      return;  // EAGAIN: none left; other errors concern one connection, which is dropped
    }
  }
}

enum class HelloState { kWaiting, kDone, kDrop };

HelloState read_hello(Pending& p) {
  for (;;) {
    const ssize_t k = ::recv(p.fd.get(), p.buf.data() + p.got, kHelloSize - p.got, MSG_DONTWAIT);
    if (k > 0) {
      p.got += size_t(k);
      if (p.got == kHelloSize) return HelloState::kDone;
    } else if (k == 0) {
      return HelloState::kDrop;
    } else if (errno != EINTR) {
      return errno == EAGAIN || errno == EWOULDBLOCK ? HelloState::kWaiting : HelloState::kDrop;
    }
  }
}

std::string missing_ranks(const std::vector<bool>& arrived) {
  std::string s;
  for (size_t r = 0; r < arrived.size(); ++r) {
    if (arrived[r]) continue;
    s += (s.empty() ? "" : ", ") + std::to_string(r);
  }
  return s;
}

std::string saw_text(int seen, int world, double timeout_s, const std::string& addr) {
  return "rank 0 saw " + std::to_string(seen) + " of " + std::to_string(world) + " ranks within " +
         seconds_text(timeout_s) + " at " + addr;
}

// Checks a complete hello; a connection that is not ours (wrong magic) is dropped, not fatal.
bool accept_hello(const Pending& p, int world, const std::string& addr, std::vector<Fd>& clients) {
  if (get_u32(p.buf.data()) != kMagic) return false;
  const uint32_t their_world = get_u32(p.buf.data() + 4), their_rank = get_u32(p.buf.data() + 8);
  if (their_world != uint32_t(world))
    throw UserError("rank 0 at " + addr + ": rank " + std::to_string(their_rank) + " has world size " +
                    std::to_string(their_world) + " but rank 0 has world size " + std::to_string(world));
  if (their_rank == 0 || their_rank >= uint32_t(world))
    throw UserError("rank 0 at " + addr + ": a process connected as rank " + std::to_string(their_rank) +
                    ", expected 1.." + std::to_string(world - 1) + " for world size " +
                    std::to_string(world));
  if (clients[their_rank].get() >= 0)
    throw UserError("rank 0 at " + addr + ": two processes connected as rank " + std::to_string(their_rank) +
                    " of world size " + std::to_string(world));
  return true;
}

void serve_tcp(const Endpoint& ep, const std::string& addr, int world, const std::vector<uint8_t>& bytes,
               Clock::time_point deadline, double timeout_s) {
  const Fd lis = listen_on(ep.port, addr);
  std::vector<Fd> clients(static_cast<size_t>(world));  // by rank; [0] stays empty
  std::vector<bool> arrived(static_cast<size_t>(world), false);
  arrived[0] = true;
  std::vector<Pending> pending;
  int seen = 1;
  while (seen < world) {
    const int ms = ms_left(deadline);
    if (ms == 0) {
      std::string msg =
          saw_text(seen, world, timeout_s, addr) + " (missing ranks " + missing_ranks(arrived) + ")";
      if (!pending.empty())
        msg += "; " + std::to_string(pending.size()) + " connection(s) sent no hello";
      throw UserError(msg);
    }
    std::vector<pollfd> pfds{{lis.get(), POLLIN, 0}};
    for (const Pending& p : pending) pfds.push_back({p.fd.get(), POLLIN, 0});
    if (::poll(pfds.data(), pfds.size(), ms) < 0) {
      if (errno == EINTR) continue;
      throw UserError("rank 0 at " + addr + ": poll failed: " + errno_text(errno));
    }
    std::vector<Pending> still;
    for (size_t i = 0; i < pending.size(); ++i) {
      Pending& p = pending[i];
      const HelloState st = pfds[i + 1].revents ? read_hello(p) : HelloState::kWaiting;
      if (st == HelloState::kWaiting) {
        still.push_back(std::move(p));
      } else if (st == HelloState::kDone && accept_hello(p, world, addr, clients)) {
        const uint32_t r = get_u32(p.buf.data() + 8);
        clients[r] = std::move(p.fd);
        arrived[r] = true;
        ++seen;
      }
    }
    pending = std::move(still);
    if (pfds[0].revents) accept_waiting(lis, pending);
  }
  std::vector<uint8_t> reply(kHeaderSize + bytes.size());
  put_u32(reply.data(), kMagic);
  put_u64(reply.data() + 4, bytes.size());
  std::copy(bytes.begin(), bytes.end(), reply.begin() + kHeaderSize);
  for (int r = 1; r < world; ++r) {
    if (const int e = send_all(clients[size_t(r)].get(), reply.data(), reply.size(), deadline))
      throw UserError("rank 0 at " + addr + " could not answer rank " + std::to_string(r) + ": " +
                      (e == ETIMEDOUT ? "timed out after " + seconds_text(timeout_s) : io_text(e)));
  }
}

// ---- TCP, other ranks ----

// A connect() to a local port nobody listens on can pick that same port as its source and connect
// to itself (TCP simultaneous open); such a socket is not rank 0.
bool connected_to_self(int fd) {
  sockaddr_in me{}, peer{};
  socklen_t a = sizeof me, b = sizeof peer;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &a) != 0) return false;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &b) != 0) return false;
  return me.sin_port == peer.sin_port && me.sin_addr.s_addr == peer.sin_addr.s_addr;
}

// One attempt: a connected socket, or an empty one with the reason in `err`.
Fd try_connect(const Endpoint& ep, Clock::time_point deadline, std::string& err) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int g = ::getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &res);
  if (g != 0) {
    err = std::string("cannot resolve host '") + ep.host + "': " + gai_strerror(g);
    return Fd();
  }
  const std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owner(res, &freeaddrinfo);
  for (const addrinfo* ai = res; ai; ai = ai->ai_next) {
    Fd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (s.get() < 0) {
      err = "socket: " + errno_text(errno);
      continue;
    }
    int e = ::connect(s.get(), ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
    if (e == EINPROGRESS || e == EINTR) {
      e = wait_fd(s.get(), POLLOUT, std::min(deadline, Clock::now() + kConnectAttempt));
      socklen_t len = sizeof e;
      if (e == 0 && ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
    }
    if (e == 0 && connected_to_self(s.get())) e = ECONNREFUSED;
    if (e == 0) return s;
    err = errno_text(e);
  }
  return Fd();
}

Fd connect_with_retry(const Endpoint& ep, const std::string& addr, int rank, Clock::time_point deadline,
                      double timeout_s) {
  std::string err = "no attempt";
  for (;;) {
    Fd s = try_connect(ep, deadline, err);
    if (s.get() >= 0) return s;
    if (Clock::now() + kPollInterval >= deadline)
      throw UserError("rank " + std::to_string(rank) + " could not reach rank 0 at " + addr + " within " +
                      seconds_text(timeout_s) + " (last error: " + err + ")");
    std::this_thread::sleep_for(kPollInterval);
  }
}

void join_tcp(const Endpoint& ep, const std::string& addr, int rank, int world, std::vector<uint8_t>& bytes,
              Clock::time_point deadline, double timeout_s) {
  const Fd s = connect_with_retry(ep, addr, rank, deadline, timeout_s);
  const std::string who = "rank " + std::to_string(rank);
  uint8_t hello[kHelloSize];
  put_u32(hello, kMagic);
  put_u32(hello + 4, uint32_t(world));
  put_u32(hello + 8, uint32_t(rank));
  if (const int e = send_all(s.get(), hello, sizeof hello, deadline))
    throw UserError(who + " could not send its hello to rank 0 at " + addr + ": " + io_text(e));
  uint8_t head[kHeaderSize];
  const auto fail = [&](int e) {
    if (e == ETIMEDOUT)
      throw UserError(who + " reached rank 0 at " + addr + " but got no answer within " +
                      seconds_text(timeout_s) + " (rank 0 answers once all " + std::to_string(world) +
                      " ranks have connected)");
    if (e == kClosed)
      throw UserError("rank 0 at " + addr + " closed the connection without answering " + who +
                      " (see rank 0's error: a world size or rank mismatch?)");
    throw UserError(who + " lost its connection to rank 0 at " + addr + ": " + io_text(e));
  };
  if (const int e = recv_all(s.get(), head, sizeof head, deadline)) fail(e);
  if (get_u32(head) != kMagic)
    throw UserError(who + ": the process at " + addr + " is not a sophiagpt rank 0 (wrong magic word)");
  const uint64_t n = get_u64(head + 4);
  if (n > kMaxPayload)
    throw UserError(who + ": rank 0 at " + addr + " announced " + std::to_string(n) +
                    " bytes (corrupt reply)");
  std::vector<uint8_t> got(n);
  if (const int e = recv_all(s.get(), got.data(), got.size(), deadline)) fail(e);
  bytes = std::move(got);
}

// ---- file ----

std::string ack_path(const std::string& path, int rank) { return path + ".ack." + std::to_string(rank); }

void write_atomically(const std::string& path, const std::vector<uint8_t>& content, const std::string& addr) {
  // The same folder, so the rename cannot cross file systems; the pid keeps two runs apart.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw UserError("rank 0 cannot create '" + tmp + "' for " + addr + ": " + errno_text(errno));
    f.write(reinterpret_cast<const char*>(content.data()), std::streamsize(content.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw UserError("rank 0 cannot write '" + tmp + "' for " + addr);
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw UserError("rank 0 cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  }
}

// Removes the rendezvous file when rank 0 leaves, whether it succeeded or not.
struct RemoveOnExit {
  std::string path;
  ~RemoveOnExit() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

void serve_file(const Endpoint& ep, const std::string& addr, int world, const std::vector<uint8_t>& bytes,
                Clock::time_point deadline, double timeout_s) {
  // Acks left by a crashed run would count as arrivals: remove them before the file appears.
  std::error_code ec;
  for (int r = 1; r < world; ++r) fs::remove(ack_path(ep.path, r), ec);
  std::vector<uint8_t> content(kFileHeaderSize + bytes.size());
  put_u32(content.data(), kMagic);
  put_u32(content.data() + 4, uint32_t(world));
  put_u64(content.data() + 8, bytes.size());
  std::copy(bytes.begin(), bytes.end(), content.begin() + kFileHeaderSize);
  write_atomically(ep.path, content, addr);
  std::vector<bool> arrived(static_cast<size_t>(world), false);
  arrived[0] = true;
  int seen = 1;
  {
    // On a timeout only the file goes: the acks stay, so a waiting rank does not take their
    // removal for success (a later run's rank 0 removes them).
    const RemoveOnExit file{ep.path};
    for (;;) {
      for (int r = 1; r < world; ++r) {
        if (!arrived[size_t(r)] && fs::exists(ack_path(ep.path, r), ec)) {
          arrived[size_t(r)] = true;
          ++seen;
        }
      }
      if (seen == world) break;
      if (Clock::now() >= deadline)
        throw UserError(saw_text(seen, world, timeout_s, addr) + " (no ack from ranks " +
                        missing_ranks(arrived) + ")");
      std::this_thread::sleep_for(kPollInterval);
    }
  }
  // The file is gone; removing the acks now releases the waiting ranks.
  for (int r = 1; r < world; ++r) fs::remove(ack_path(ep.path, r), ec);
}

// The payload when a complete, fresh file for this world is there; otherwise nullopt and the
// reason in `why`. A fresh file for another world size is an error.
std::optional<std::vector<uint8_t>> try_read_file(const std::string& path, int rank, int world,
                                                  const std::string& addr, std::string& why) {
  std::error_code ec;
  const fs::file_time_type mtime = fs::last_write_time(path, ec);
  if (ec) return none(why, "no file");
  if (std::chrono::file_clock::to_sys(mtime) < kProcessStart - kStaleMargin)
    return none(why, "only a stale file, older than this process by more than 120 s");
  std::ifstream f(path, std::ios::binary);
  if (!f) return none(why, "the file vanished while being opened");
  const std::vector<uint8_t> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (buf.size() < kFileHeaderSize || get_u32(buf.data()) != kMagic)
    return none(why, "the file there is not a rendezvous file (wrong magic word or too short)");
  const uint32_t file_world = get_u32(buf.data() + 4);
  if (file_world != uint32_t(world))
    throw UserError("rank " + std::to_string(rank) + " at " + addr + ": the file is for world size " +
                    std::to_string(file_world) + " but rank " + std::to_string(rank) + " has world size " +
                    std::to_string(world));
  const uint64_t n = get_u64(buf.data() + 8);
  if (n != buf.size() - kFileHeaderSize)
    return none(why, "the file is incomplete (" + std::to_string(buf.size() - kFileHeaderSize) + " of " +
                 std::to_string(n) + " bytes)");
  return std::vector<uint8_t>(buf.begin() + kFileHeaderSize, buf.end());
}

void join_file(const Endpoint& ep, const std::string& addr, int rank, int world, std::vector<uint8_t>& bytes,
               Clock::time_point deadline, double timeout_s) {
  const std::string who = "rank " + std::to_string(rank);
  std::string why;
  std::optional<std::vector<uint8_t>> got;
  while (!(got = try_read_file(ep.path, rank, world, addr, why))) {
    if (Clock::now() >= deadline)
      throw UserError(who + " found no rendezvous file from rank 0 at " + addr + " within " +
                      seconds_text(timeout_s) + " (" + why + ")");
    std::this_thread::sleep_for(kPollInterval);
  }
  const std::string ack = ack_path(ep.path, rank);
  if (!std::ofstream(ack, std::ios::binary | std::ios::trunc))
    throw UserError(who + " cannot create '" + ack + "' for " + addr + ": " + errno_text(errno));
  // Rank 0 removes the acks only once every rank has acknowledged: waiting for ours to go makes the
  // rendezvous a barrier for this rank too.
  std::error_code ec;
  while (fs::exists(ack, ec) || ec) {
    if (Clock::now() >= deadline)
      throw UserError(who + " read " + addr + " but rank 0 did not see all " + std::to_string(world) +
                      " ranks within " + seconds_text(timeout_s));
    std::this_thread::sleep_for(kPollInterval);
  }
  bytes = std::move(*got);
}

}  // namespace

LaunchInfo detect_launch(const GetEnv& getenv) {
  const GetEnv get = or_std_getenv(getenv);
  // The first launcher with both its rank and size variables wins; a half-set pair is an error only
  // when no launcher is complete, so that a stray variable of an outer launcher (say a Slurm job
  // running torchrun) does not hide a complete inner one.
  for (const Launcher& l : kLaunchers) {
    if (get(l.rank_var) && get(l.size_var)) return read_launcher(get, l);
  }
  for (const Launcher& l : kLaunchers) {
    const bool has_rank = get(l.rank_var) != nullptr, has_size = get(l.size_var) != nullptr;
    if (has_rank != has_size)
      throw UserError(std::string(has_rank ? l.rank_var : l.size_var) + " is set but " +
                      (has_rank ? l.size_var : l.rank_var) + " is not (" + l.name + " launch needs both)");
  }
  return LaunchInfo{};
}

std::string resolve_init(const std::string& init, const GetEnv& getenv) {
  if (!init.empty()) {
    endpoint_or_throw(init, "");
    return init;
  }
  const GetEnv get = or_std_getenv(getenv);
  const char* addr = get("MASTER_ADDR");
  const char* port = get("MASTER_PORT");
  const std::string host = addr && *addr ? addr : "127.0.0.1";
  const std::string p = port && *port ? port : "29500";
  const std::string s = "tcp://" + host + ":" + p;
  endpoint_or_throw(s, " (dist.init is empty; made from MASTER_ADDR and MASTER_PORT)");
  return s;
}

void rendezvous(const std::string& init, int rank, int world, std::vector<uint8_t>& bytes, double timeout_s) {
  if (world < 1 || rank < 0 || rank >= world)
    throw UserError("rendezvous at " + init + ": rank " + std::to_string(rank) +
                    " is not in [0, world size " + std::to_string(world) + ")");
  if (world == 1) return;
  const Endpoint ep = endpoint_or_throw(init, "");
  // Clamped so a huge or non-finite timeout cannot overflow the clock (1e8 s is three years).
  const double wait_s = timeout_s > 0 ? std::min(timeout_s, 1e8) : 0.0;
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s));
  if (ep.tcp && rank == 0) serve_tcp(ep, init, world, bytes, deadline, timeout_s);
  if (ep.tcp && rank != 0) join_tcp(ep, init, rank, world, bytes, deadline, timeout_s);
  if (!ep.tcp && rank == 0) serve_file(ep, init, world, bytes, deadline, timeout_s);
  if (!ep.tcp && rank != 0) join_file(ep, init, rank, world, bytes, deadline, timeout_s);
}

}  // namespace sgpt::dist
