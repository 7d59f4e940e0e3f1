#include "tests/harness/redis_client.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "common/envelope.h"

namespace djinn::testing {

RedisClient::RedisClient(int port) : port_(port) {
  ctx_.reset(redisConnect("127.0.0.1", port));
  if (!ctx_ || ctx_->err) {
    ADD_FAILURE() << "cannot connect to redis on port " << port;
    ctx_.reset();
  }
}

RedisReplyPtr RedisClient::Cmd(const std::vector<std::string>& args) {
  if (!ctx_ || ctx_->err) ctx_.reset(redisConnect("127.0.0.1", port_));
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  void* r = ctx_ ? redisCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv.data(), lens.data())
                 : nullptr;
  if (!r) {
    ADD_FAILURE() << "redis command " << args[0] << " failed: " << (ctx_ ? ctx_->errstr : "no connection");
    ctx_.reset();
    return nullptr;
  }
  return RedisReplyPtr(static_cast<redisReply*>(r));
}

int64_t RedisClient::Int(const std::vector<std::string>& args) {
  auto r = Cmd(args);
  return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
}

std::string RedisClient::Str(const std::vector<std::string>& args) {
  auto r = Cmd(args);
  if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)) return "";
  return std::string(r->str, r->len);
}

std::vector<std::string> RedisClient::List(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  auto r = Cmd(args);
  if (!r || r->type != REDIS_REPLY_ARRAY) return out;
  for (size_t i = 0; i < r->elements; i++)
    if (r->element[i]->type == REDIS_REPLY_STRING) out.emplace_back(r->element[i]->str, r->element[i]->len);
  return out;
}

void RedisClient::PushLikeCurlyq(const std::string& queue, const std::string& id,
                                 const std::string& envelope) {
  PushManyLikeCurlyq(queue, {{id, envelope}});
}

void RedisClient::PushLikeCurlyqV040(const std::string& queue, const std::string& id,
                                     const std::string& envelope) {
  PushManyLikeCurlyq(queue, {{id, envelope}}, false);
}

void RedisClient::PushManyLikeCurlyq(const std::string& queue,
                                     const std::vector<std::pair<std::string, std::string>>& jobs,
                                     bool signal) {
  auto append = [&](const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    redisAppendCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv.data(), lens.data());
  };
  size_t n = 0;
  for (const auto& [id, env] : jobs) {
    append({"HSETNX", queue + ":data", id, env});
    append({"RPUSH", queue + ":active", id});
    n += 2;
  }
  if (signal) {
    append({"DEL", queue + ":signal"});
    append({"LPUSH", queue + ":signal", "1"});
    n += 2;
  }
  for (size_t i = 0; i < n; i++) {
    void* r = nullptr;
    if (redisGetReply(ctx_.get(), &r) != REDIS_OK) {
      ADD_FAILURE() << "redis pipeline failed: " << ctx_->errstr;
      return;
    }
    freeReplyObject(r);
  }
}

std::string JsonJobEnvelope(const std::string& id, const std::string& json, int64_t attempt) {
  Envelope env;
  env.id = id;
  env.data = json;
  env.attempt = attempt;
  return EncodeEnvelope(env);
}

}  // namespace djinn::testing
