#include "tools/efusectl/status_file.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "core/session.h"

namespace efuse::ctl {

std::vector<std::string> ReadStatusFile(unsigned id) {
  std::vector<std::string> lines;
  std::ifstream status(StatusFilePath(id));
  std::string line;
  while (std::getline(status, line)) lines.push_back(line);
  return lines;
}

long StatusValue(const std::vector<std::string>& lines, const std::string& key) {
  for (const std::string& l : lines)
    if (l.rfind(key + ": ", 0) == 0) return std::strtol(l.c_str() + key.size() + 2, nullptr, 10);
  return 0;
}

std::vector<std::string> FreshStatusFile(unsigned id) {
  std::vector<std::string> lines = ReadStatusFile(id);
  const long pid = StatusValue(lines, "pid");
  if (pid <= 0 || kill(static_cast<pid_t>(pid), SIGUSR1) != 0) return lines;
  const long seq = StatusValue(lines, "status_seq");
  for (int i = 0; i < 200; ++i) {
    std::vector<std::string> fresh = ReadStatusFile(id);
    if (StatusValue(fresh, "status_seq") > seq) return fresh;
    usleep(5000);
  }
  return lines;
}

}  // namespace efuse::ctl
