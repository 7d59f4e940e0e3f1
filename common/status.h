// Status and Result<T>: expected failures as values.
//
// The kind of a failure decides a job's fate (see DESIGN §4 and STYLE.md):
//   kTransient -> retry with backoff (timeouts, refused connections, 5xx,
//                 database or Redis unavailable);
//   kPermanent -> record the error and ack (4xx, wrong content type, bad
//                 magic, too large, bad config value);
//   kPoison    -> the message itself cannot be understood: dead set at once;
//   kUnavailable -> one of our own dependencies failed (PostgreSQL, Redis,
//                 the store's filesystem, a configured CA file): not the
//                 job's fault. The job goes back without an attempt counted
//                 and the worker holds back until the dependency answers.
// Messages are one line and name the thing at fault.
#ifndef DJINN_COMMON_STATUS_H_
#define DJINN_COMMON_STATUS_H_

#include <string>
#include <utility>
#include <variant>

namespace djinn {

class Status {
 public:
  enum class Kind { kOk, kTransient, kPermanent, kPoison, kUnavailable };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status Transient(std::string msg) {
    return Status(Kind::kTransient, std::move(msg));
  }
  static Status Permanent(std::string msg) {
    return Status(Kind::kPermanent, std::move(msg));
  }
  static Status Poison(std::string msg) {
    return Status(Kind::kPoison, std::move(msg));
  }
  static Status Unavailable(std::string msg) {
    return Status(Kind::kUnavailable, std::move(msg));
  }
  // errno turned into a Status in one place: "<what>: <strerror(err)>".
  static Status FromErrno(const std::string& what, int err,
                          Kind kind = Kind::kPermanent);

  bool ok() const { return kind_ == Kind::kOk; }
  Kind kind() const { return kind_; }
  bool transient() const { return kind_ == Kind::kTransient; }
  bool permanent() const { return kind_ == Kind::kPermanent; }
  bool poison() const { return kind_ == Kind::kPoison; }
  bool unavailable() const { return kind_ == Kind::kUnavailable; }
  const std::string& message() const { return message_; }
  // Same kind, message prefixed with "<context>: ".
  Status Wrap(const std::string& context) const;
  std::string ToString() const;

 private:
  Status(Kind k, std::string m) : kind_(k), message_(std::move(m)) {}
  Kind kind_ = Kind::kOk;
  std::string message_;
};

// A value or a non-ok Status.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace djinn

#endif  // DJINN_COMMON_STATUS_H_
