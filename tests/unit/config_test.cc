#include "common/config.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace strongroom {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/strongroom-config-test-XXXXXX";
    dir_ = mkdtemp(dir_template);
    for (const char* name : {"ca.pem", "cert.pem", "key.pem"}) std::ofstream(dir_ + "/" + name) << "x";
  }
  void TearDown() override {
    for (const char* name : {"ca.pem", "cert.pem", "key.pem", "c.textproto"})
      std::remove((dir_ + "/" + name).c_str());
    std::remove(dir_.c_str());
  }

  // Writes `text` and validates it as a NetdConfig; returns the error message or "".
  std::string Check(const std::string& text) {
    const std::string path = dir_ + "/c.textproto";
    std::ofstream(path) << text;
    v1::NetdConfig config;
    absl::StatusOr<std::unique_ptr<ConfigSource>> source = LoadTextprotoFile(path, &config);
    absl::Status status = source.ok() ? ValidateServerConfig(config.server(), **source) : source.status();
    return status.ok() ? "" : std::string(status.message());
  }

  std::string Valid(const std::string& extra = "") {
    return "server {\n"
           "  listen_address: \"0.0.0.0:7443\"\n"
           "  tls { ca_file: \"" +
           dir_ + "/ca.pem\" cert_file: \"" + dir_ + "/cert.pem\" key_file: \"" + dir_ +
           "/key.pem\" }\n"
           "  trust_domain: \"lab.example.edu\"\n"
           "  instance: \"node1\"\n" +
           extra + "}\n";
  }

  std::string dir_;
};

TEST_F(ConfigTest, AcceptsAValidFile) { EXPECT_EQ(Check(Valid()), ""); }

TEST_F(ConfigTest, SyntaxErrorNamesFileAndLine) {
  std::string error = Check("server {\n  listen_address: \"a:1\"\n  bogus_field: 3\n}\n");
  EXPECT_NE(error.find("c.textproto:3:"), std::string::npos) << error;
  EXPECT_NE(error.find("bogus_field"), std::string::npos) << error;
}

TEST_F(ConfigTest, OutOfRangeValueNamesLineAndField) {
  std::string error = Check(Valid("  drain_seconds: 9000\n"));
  EXPECT_NE(error.find("c.textproto:6: server.drain_seconds: 9000 is not in 0..300"), std::string::npos)
      << error;
}

TEST_F(ConfigTest, BadPortNamesLineAndField) {
  std::string text = Valid();
  text.replace(text.find("7443"), 4, "70000");
  std::string error = Check(text);
  EXPECT_NE(error.find("c.textproto:2: server.listen_address: port \"70000\" is not in 1..65535"),
            std::string::npos)
      << error;
}

TEST_F(ConfigTest, MissingFieldPointsAtEnclosingMessage) {
  std::string error = Check("server {\n  listen_address: \"0.0.0.0:1\"\n}\n");
  EXPECT_NE(error.find("c.textproto:1: server.tls.ca_file: required"), std::string::npos) << error;
}

TEST_F(ConfigTest, UnreadableFileIsNamed) {
  std::string text = Valid();
  text.replace(text.find(dir_ + "/ca.pem"), dir_.size() + 7, "/nonexistent/ca.pem");
  std::string error = Check(text);
  EXPECT_NE(error.find("server.tls.ca_file: /nonexistent/ca.pem: No such file or directory"),
            std::string::npos)
      << error;
}

TEST_F(ConfigTest, MissingFileIsNotFound) {
  v1::NetdConfig config;
  EXPECT_EQ(LoadTextprotoFile("/nonexistent.textproto", &config).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace strongroom
