#include "common/scoreboard.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace djinn {
namespace {

TEST(ScoreboardTest, PublishesBusyAndIdle) {
  Scoreboard board(4);
  board.Reset(2);
  board.SetBusy(2, "job-1", "ping", 1234);
  WorkerState st = board.Read(2);
  EXPECT_TRUE(st.busy);
  EXPECT_FALSE(st.torn);
  EXPECT_EQ(st.job_id, "job-1");
  EXPECT_EQ(st.job_type, "ping");
  EXPECT_EQ(st.started_ms, 1234);
  board.SetIdle(2);
  st = board.Read(2);
  EXPECT_FALSE(st.busy);
  EXPECT_EQ(st.jobs_done, 1u);
}

// Every index is checked: out of range writes nothing anywhere and reads
// as idle.
TEST(ScoreboardTest, OutOfRangeIndexesAreHarmless) {
  Scoreboard board(2);
  board.Reset(2);
  board.SetBusy(2, "x", "y", 1);
  board.SetBusy(SIZE_MAX, "x", "y", 1);
  board.SetIdle(7);
  EXPECT_FALSE(board.Read(2).busy);
  EXPECT_FALSE(board.Read(SIZE_MAX).busy);
  EXPECT_FALSE(board.Read(0).busy);
  EXPECT_FALSE(board.Read(1).busy);
  EXPECT_EQ(board.Read(1).jobs_done, 0u);
}

}  // namespace
}  // namespace djinn
