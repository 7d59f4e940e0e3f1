// RAII for the C handles of the libraries we use. Each alias is a
// std::unique_ptr with the library's own free function as deleter, so a
// handle can never be leaked on an early return.
#ifndef DJINN_COMMON_C_HANDLES_H_
#define DJINN_COMMON_C_HANDLES_H_

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <libconfig.h>
#include <libpq-fe.h>

#include <memory>

namespace djinn {

template <typename T, void (*Free)(T*)>
struct CFree {
  void operator()(T* p) const {
    if (p) Free(p);
  }
};

inline void FreeRedisReply(redisReply* r) { freeReplyObject(r); }
inline void FreeConfig(config_t* c) {
  config_destroy(c);
  delete c;
}

using RedisContextPtr = std::unique_ptr<redisContext, CFree<redisContext, redisFree>>;
using RedisReplyPtr = std::unique_ptr<redisReply, CFree<redisReply, FreeRedisReply>>;
using PgConnPtr = std::unique_ptr<PGconn, CFree<PGconn, PQfinish>>;
using PgResultPtr = std::unique_ptr<PGresult, CFree<PGresult, PQclear>>;
using CurlPtr = std::unique_ptr<CURL, CFree<CURL, curl_easy_cleanup>>;
using CurlSlistPtr = std::unique_ptr<curl_slist, CFree<curl_slist, curl_slist_free_all>>;
using CurlUrlPtr = std::unique_ptr<CURLU, CFree<CURLU, curl_url_cleanup>>;
using ConfigPtr = std::unique_ptr<config_t, CFree<config_t, FreeConfig>>;

// curl_free'd strings (curl_url_get and friends).
struct CurlStrFree {
  void operator()(char* p) const { curl_free(p); }
};
using CurlStrPtr = std::unique_ptr<char, CurlStrFree>;

}  // namespace djinn

#endif  // DJINN_COMMON_C_HANDLES_H_
