// OpenSSL's libcrypto (libssl-dev): the AEAD ciphers of ESP, used in place
// with one cipher context per SA direction (AnygateCrypto).
#include <openssl/evp.h>
#include <openssl/crypto.h>
