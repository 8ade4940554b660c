// core/api.h — what libefuse exports.
//
// Owns: EFUSE_API, which marks the classes and functions of the public
// headers (core/filesystem.h, core/server.h) as visible from libefuse.so;
// everything else in the library is built hidden, so programs can only
// depend on the public surface.
#ifndef EFUSE_CORE_API_H_
#define EFUSE_CORE_API_H_

#define EFUSE_API __attribute__((visibility("default")))

#endif  // EFUSE_CORE_API_H_
